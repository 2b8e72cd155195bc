"""Where a training step's time goes: torch.profiler table for gpt_scratch or transformers' GPT-2.

    python bench/profile_train.py --model ours --dtype bf16 [--config small] [--steps 3]

Prints the top operators by self CPU time (after warm-up steps) and a coarse
breakdown: matmuls, attention, softmax/cross-entropy, optimizer, layernorm,
GELU, dtype casts, other.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, ensure_malloc_env, set_threads  # noqa: E402

GROUPS = [
    ("matmul (linear, lm_head)", ("addmm", "mm", "bmm", "matmul", "linear", "onednn", "mkldnn")),
    ("attention (sdpa)", ("flash_attention", "scaled_dot_product", "_efficient_attention")),
    ("softmax / cross-entropy", ("log_softmax", "nll_loss", "cross_entropy", "softmax", "logsumexp", "exp", "gather", "scatter",
                                 "aten::max", "lmheadcrossentropy")),
    ("optimizer (AdamW)", ("adam", "_foreach", "lerp", "addcmul", "addcdiv", "sqrt")),
    ("layernorm", ("layer_norm",)),
    ("gelu", ("gelu", "tanh", "pow")),
    ("dtype casts / copies", ("to_copy", "copy_", "_to_copy", "clone", "contiguous", "fill_", "zero_")),
    ("embedding", ("embedding",)),
]


def group_of(name: str) -> str:
    n = name.lower()
    for g, keys in GROUPS:
        if any(k in n for k in keys):
            return g
    return "other"


def main(argv=None):
    p = base_parser("profile_train", __doc__)
    p.add_argument("--model", choices=["ours", "hf"], default="ours")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--config", choices=["small", "gpt2"], default="small")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from train_throughput import CONFIGS, make_models, make_optimizer, make_step

    cfg = CONFIGS[args.config]
    ours, hf = make_models(cfg)
    model = ours if args.model == "ours" else hf
    del ours, hf
    opt = make_optimizer(model)
    step = make_step(model, opt, cfg, args.dtype, seed=0)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    groups = {}
    for e in events:
        g = group_of(e.key)
        groups[g] = groups.get(g, 0) + e.self_cpu_time_total
    print(f"breakdown of self CPU time ({args.model}, {args.config}, {args.dtype}, {args.steps} steps):")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:28s} {t / 1e6 / args.steps:7.3f} s/step  {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main()
