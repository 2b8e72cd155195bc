"""Data pipeline speed: gpt_scratch.train.data.load_blocks on tiny Shakespeare vs a plain tiktoken encode.

* cold: `load_blocks` into a fresh, empty cache folder (read, hash, tokenize,
  block, save_to_disk, load back memory-mapped);
* cached: the same call again, now a cache hit (read, hash, load_from_disk);
* baseline: `encode_ordinary(text)` of the whole text with the same tiktoken
  encoding (what any training script must at least do).

The tokenizer is built once first (its load time is reported on its own), so
the cold numbers are the pipeline's own cost. Medians over rounds, each cold
round in a new folder.

    python bench/data_pipeline.py [--data PATH] [--block-size 256]
    python bench/data_pipeline.py --quick
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    base_parser,
    default_data_path,
    ensure_malloc_env,
    env_info,
    now,
    set_threads,
    summarize,
    write_results,
)


def main(argv=None):
    p = base_parser("data_pipeline", __doc__)
    p.add_argument("--data", default=str(default_data_path()), help="text file (default: ../shared/data/tinyshakespeare.txt)")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=None)
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found: pass --data PATH with tiny Shakespeare (or any UTF-8 text file)")
    rounds = args.rounds or (1 if args.quick else 5)

    import datasets

    datasets.disable_progress_bars()
    from gpt_scratch.train import TrainConfig
    from gpt_scratch.train.data import load_blocks
    from gpt_scratch.tokenizer import load_tiktoken

    work = Path(tempfile.mkdtemp(prefix="gpt_scratch_bench_data_"))
    try:
        if args.quick:  # a slice of the text: the same code paths in a fraction of the time
            text = data.read_text(encoding="utf-8")[:60_000]
            data = work / "slice.txt"
            data.write_text(text, encoding="utf-8")
        text = data.read_text(encoding="utf-8")

        t0 = now()
        enc = load_tiktoken()
        tokenizer_load_s = now() - t0

        encode_s, cold_s, cached_s = [], [], []
        n_tokens = None
        for r in range(rounds):
            t0 = now()
            ids = enc.encode_ordinary(text)
            encode_s.append(now() - t0)
            n_tokens = len(ids)

            cache = work / f"cache{r}"
            t0 = now()
            cfg = TrainConfig(data=str(data), block_size=args.block_size, cache_dir=str(cache))
            train, val, _ = load_blocks(cfg)
            cold_s.append(now() - t0)
            n_blocks = {"train": len(train), "validation": len(val)}

            t0 = now()
            train, val, _ = load_blocks(cfg)
            cached_s.append(now() - t0)
            # touch the data, as a training loop would: the first block must be real tokens
            assert train[0].tolist() == ids[: args.block_size]
            print(f"  round {r + 1}: encode {encode_s[-1]:.3f} s, cold build {cold_s[-1]:.3f} s, cached {cached_s[-1]:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    enc_m = summarize(encode_s)["median"]
    results = {
        "env": env_info(),
        "data": str(args.data) + (" (first 60,000 characters)" if args.quick else ""),
        "characters": len(text),
        "tokens": n_tokens,
        "block_size": args.block_size,
        "blocks": n_blocks,
        "tokenizer_load_s": tokenizer_load_s,
        "encode_s": summarize(encode_s),
        "cold_build_s": summarize(cold_s),
        "cached_build_s": summarize(cached_s),
        "cold_over_encode": summarize([c / e for c, e in zip(cold_s, encode_s)]),
        "cached_over_encode": summarize([c / e for c, e in zip(cached_s, encode_s)]),
        "encode_tokens_per_s": n_tokens / enc_m,
    }
    write_results(args.out, results)
    print(
        f"{n_tokens:,} tokens; tokenizer load {tokenizer_load_s:.3f} s; encode_ordinary {enc_m:.3f} s; "
        f"build cold {results['cold_build_s']['median']:.3f} s, cached {results['cached_build_s']['median']:.3f} s"
    )
    print(
        f"RATIOS: data cold build {results['cold_over_encode']['median']:.2f}x plain encode; "
        f"cached {results['cached_over_encode']['median']:.2f}x plain encode"
    )


if __name__ == "__main__":
    main()
