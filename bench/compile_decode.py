"""Compiled static-cache decoding on CPU: what torch.compile costs and buys for greedy generate().

Four ways to decode the same 16-token prompts greedily with the same weights:
  gpt_scratch eager, its default cache (decoding.py's DecodingCache on CPU)
  gpt_scratch eager, StaticCache           (cache_implementation="static")
  gpt_scratch compiled, StaticCache        (model.forward = torch.compile(..., fullgraph=True))
  transformers' GPT-2 eager, its default DynamicCache (the reference)
Every way must give identical tokens (asserted). Reported: the first compiled call's wall
time (compiling, prefill and decode shapes), and per round tokens/s of each way with the
ratio against transformers' eager GPT-2, median (min-max) over interleaved rounds.

    python bench/compile_decode.py            # ~3-4 minutes on 2 cores
    python bench/compile_decode.py --quick    # smoke test, under a minute
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    base_parser,
    ensure_malloc_env,
    env_info,
    fmt_ratio,
    now,
    paired_rounds,
    ratio_summary,
    set_threads,
    summarize,
    write_results,
)
from generate_throughput import CONFIGS, PROMPT_LEN, make_models  # noqa: E402


def main(argv=None):
    p = base_parser("compile_decode", __doc__)
    p.add_argument("--config", default=None, choices=["small", "gpt2"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)
    import torch

    name = args.config or ("quick" if args.quick else "small")
    new_tokens = args.new_tokens or (8 if args.quick else 100)
    rounds = args.rounds or (1 if args.quick else 4)
    cfg = CONFIGS[name]
    info = env_info()
    print(f"torch {info['torch']}, transformers {info['transformers']}, {info['torch_threads']} threads, {info['cpu']}")

    eager, hf = make_models(cfg)
    compiled, _ = make_models(cfg)  # same seed, same weights; only its forward is compiled
    compiled.forward = torch.compile(compiled.forward, fullgraph=True)
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, cfg["vocab_size"] - 1, (args.batch, PROMPT_LEN), generator=g)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
              pad_token_id=50256)
    ways = {
        "ours_default": (eager, {}),
        "ours_static": (eager, {"cache_implementation": "static"}),
        "ours_compiled_static": (compiled, {"cache_implementation": "static"}),
        "transformers": (hf, {}),
    }
    tokens = {}

    def runner(key):
        model, extra = ways[key]

        def run():
            with torch.inference_mode():
                t0 = now()
                ids = model.generate(prompt, **kw, **extra)
                dt = now() - t0
            tokens.setdefault(key, ids)
            return args.batch * new_tokens / dt

        return run

    t0 = now()
    runner("ours_compiled_static")()  # compiles for the prefill and the one-token decode shapes
    compile_s = now() - t0
    print(f"first compiled generate(): {compile_s:.1f} s (compiling included)")
    with torch.inference_mode():
        for key in ("ours_default", "ours_static", "transformers"):
            ways[key][0].generate(prompt, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4}, **ways[key][1])
    tokens.clear()
    rates = paired_rounds({k: runner(k) for k in ways}, rounds)
    identical = all(torch.equal(tokens[k], tokens["transformers"]) for k in ways)
    results = {
        "env": info, "config": cfg, "batch": args.batch, "new_tokens": new_tokens, "prompt_len": PROMPT_LEN,
        "compile_first_call_s": compile_s, "identical_tokens": identical,
        "tokens_per_s": {k: summarize(v) for k, v in rates.items()},
        "ratio_over_transformers": {k: ratio_summary(rates, k, "transformers") for k in ways if k != "transformers"},
    }
    write_results(args.out, results)
    ratios = "; ".join(f"{k} {fmt_ratio(s)}" for k, s in results["ratio_over_transformers"].items())
    print(f"RATIOS: decode {name} b{args.batch} over transformers eager: {ratios}; "
          f"compile {compile_s:.0f} s; identical tokens: {identical}")
    assert identical, "the decoding ways gave different tokens from identical weights"


if __name__ == "__main__":
    main()
