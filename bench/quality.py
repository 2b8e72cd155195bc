"""Training quality: validation loss on tiny Shakespeare after a fixed number of steps.

gpt_scratch and transformers' GPT2LMHeadModel start from the *same* weights
(`to_hf_gpt2`), see the same batches in the same order, with the same AdamW
settings and gradient clipping, fp32, dropout 0. Their steps are interleaved
(ours, hf, then hf, ours, ...) so that the wall times compare under the same
load. This is repeated for two seeds (new init and new data order): the
difference between seeds is the noise against which the ours-vs-hf gap is read.
The bigram baseline (`gpt_scratch.BigramForCausalLM`, if importable) trains on
the same batches for the same number of steps.

Validation loss = mean token loss over every validation block (fixed, in order).

    python bench/quality.py [--data PATH] [--steps 150]
    python bench/quality.py --quick
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    base_parser,
    default_data_path,
    ensure_malloc_env,
    env_info,
    now,
    set_threads,
    write_results,
)

MODEL = {
    "default": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch=8, steps=150, lr=1e-3),
    "quick": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch=4, steps=5, lr=1e-3),
}
BIGRAM_N_EMBD = 128
SEEDS = (0, 1)


def make_optimizer(model, lr):
    import torch

    kw = dict(lr=lr, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), foreach=True, **kw)


def train_step(model, opt, x):
    import torch

    from gpt_scratch.train.loop import forward_kwargs

    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=x, **forward_kwargs(model)).loss  # as the training loop calls it
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def val_loss(model, val, batch):
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(val), batch):
            x = val[i : i + batch]
            n = x.shape[0] * (x.shape[1] - 1)
            total += model(input_ids=x, labels=x).loss.item() * n
            count += n
    model.train()
    return total / count


def load_bigram():
    try:
        from gpt_scratch import BigramConfig, BigramForCausalLM
    except ImportError as e:
        return None, f"gpt_scratch.BigramForCausalLM not importable ({e})"
    return (BigramConfig, BigramForCausalLM), None


def run_seed(seed, m, train, val, bigram):
    import torch

    from gpt_scratch import GPTConfig, GPTForCausalLM, to_hf_gpt2

    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=50257, block_size=m["block_size"], n_layer=m["n_layer"], n_head=m["n_head"],
                       n_embd=m["n_embd"], dropout=0.0)
    models = {"gpt_scratch": GPTForCausalLM(config).train()}
    models["transformers"] = to_hf_gpt2(models["gpt_scratch"]).train()
    if bigram is not None:
        BigramConfig, BigramForCausalLM = bigram
        torch.manual_seed(seed)
        models["bigram"] = BigramForCausalLM(
            BigramConfig(vocab_size=50257, n_embd=BIGRAM_N_EMBD, block_size=m["block_size"])
        ).train()
    opts = {k: make_optimizer(v, m["lr"]) for k, v in models.items()}
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(0, len(train), (m["steps"], m["batch"]), generator=g)  # same batches for every model
    wall = {k: 0.0 for k in models}
    train_loss = {k: [] for k in models}
    names = list(models)
    for step in range(m["steps"]):
        x = train[order[step]]
        for k in (names if step % 2 == 0 else names[::-1]):
            t0 = now()
            train_loss[k].append(train_step(models[k], opts[k], x))
            wall[k] += now() - t0
    out = {}
    for k, model in models.items():
        t0 = now()
        v = val_loss(model, val, 2 * m["batch"])
        out[k] = {
            "val_loss": v,
            "final_train_loss": train_loss[k][-1],
            "train_wall_s": wall[k],
            "eval_s": now() - t0,
            "tokens_per_s": m["steps"] * m["batch"] * m["block_size"] / wall[k],
            "params": sum(p.numel() for p in model.parameters()),
        }
        print(f"  seed {seed} {k:13s} val loss {v:.4f}  train wall {wall[k]:.1f} s")
    return out


def main(argv=None):
    p = base_parser("quality", __doc__)
    p.add_argument("--data", default=str(default_data_path()), help="text file (default: ../shared/data/tinyshakespeare.txt)")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import tempfile
    from pathlib import Path

    import datasets

    datasets.disable_progress_bars()
    from gpt_scratch.train import TrainConfig
    from gpt_scratch.train.data import load_blocks

    m = dict(MODEL["quick" if args.quick else "default"])
    if args.steps:
        m["steps"] = args.steps
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found: pass --data PATH with tiny Shakespeare (or any UTF-8 text file)")
    with tempfile.TemporaryDirectory(prefix="gpt_scratch_bench_quality_") as work:
        if args.quick:
            sliced = Path(work) / "slice.txt"
            sliced.write_text(data.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
            data = sliced
        blocks = load_blocks(TrainConfig(data=str(data), block_size=m["block_size"], cache_dir=str(Path(work) / "cache")))
        import torch

        # the whole split as one (n_blocks, block) LongTensor, read before the temp cache goes
        train, val = (torch.stack([split[i] for i in range(len(split))]) for split in blocks[:2])
    print(f"train {tuple(train.shape)} blocks, validation {tuple(val.shape)}; model {m}")

    bigram, bigram_skip = load_bigram()
    if bigram_skip:
        print(f"bigram baseline skipped: {bigram_skip}")

    per_seed = {}
    for seed in SEEDS:
        per_seed[str(seed)] = run_seed(seed, m, train, val, bigram)

    models = list(per_seed[str(SEEDS[0])])
    summary = {}
    for k in models:
        vals = [per_seed[str(s)][k]["val_loss"] for s in SEEDS]
        summary[k] = {
            "val_loss_mean": sum(vals) / len(vals),
            "seed_spread": max(vals) - min(vals),
            "train_wall_s_total": sum(per_seed[str(s)][k]["train_wall_s"] for s in SEEDS),
        }
    gap = [per_seed[str(s)]["gpt_scratch"]["val_loss"] - per_seed[str(s)]["transformers"]["val_loss"] for s in SEEDS]
    wall_ratio = summary["transformers"]["train_wall_s_total"] / summary["gpt_scratch"]["train_wall_s_total"]
    results = {
        "env": env_info(),
        "model": m,
        "seeds": list(SEEDS),
        "train_blocks": int(train.shape[0]),
        "val_blocks": int(val.shape[0]),
        "uniform_loss": math.log(50257),
        "per_seed": per_seed,
        "summary": summary,
        "ours_minus_hf_val_loss": gap,
        "max_abs_gap": max(abs(x) for x in gap),
        "seed_noise": summary["gpt_scratch"]["seed_spread"],
        "train_speed_ratio_ours_over_hf": wall_ratio,
        "bigram_skipped": bigram_skip,
    }
    write_results(args.out, results)
    line = (
        f"RATIOS: quality val loss ours {summary['gpt_scratch']['val_loss_mean']:.4f} vs hf "
        f"{summary['transformers']['val_loss_mean']:.4f} (max |gap| {results['max_abs_gap']:.4f}, "
        f"seed noise {results['seed_noise']:.4f}); train speed ours/hf {wall_ratio:.2f}x"
    )
    if "bigram" in summary:
        line += f"; bigram {summary['bigram']['val_loss_mean']:.4f}"
    print(line)


if __name__ == "__main__":
    main()
