"""Training throughput: gpt_scratch vs transformers' GPT2LMHeadModel, same weights, same optimizer.

One step = forward with labels (loss), backward, AdamW step (fused where torch
has it, the same for both models). Tokens/s = batch * block / step time.
Configs: `small` (6 layers, 6 heads, 384 wide, block 256, batch 8) and `gpt2`
(124M, block 1024, batch 1); fp32 and bf16 autocast. Each config/dtype runs
`rounds` paired rounds (ours, hf, then hf, ours, ...) of `steps` steps each;
the ratio is taken per round and reported as median (min-max).

MFU = model FLOP/s / matmul peak FLOP/s of the same dtype, the peak measured
at the start of this run (a 1024^3 matmul, best of ~1 s). Model FLOPs per
token follow nanoGPT: 6 * N (parameters without the position table) +
12 * n_layer * n_embd * block (attention scores and values).

    python bench/train_throughput.py            # ~4 minutes on 2 cores
    python bench/train_throughput.py --quick    # smoke test, seconds
    python bench/train_throughput.py --compile  # also torch.compile(ours), fp32 + bf16 on small
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    base_parser,
    bf16_is_fast,
    ensure_malloc_env,
    env_info,
    fmt_ratio,
    measure_matmul_peak,
    now,
    paired_rounds,
    ratio_summary,
    set_threads,
    summarize,
    write_results,
)

CONFIGS = {
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=8, vocab_size=50257),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch=1, vocab_size=50257),
    "quick": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch=2, vocab_size=50257),
}
# (max rounds, steps per round, time budget in s for the timed rounds of one dtype).
# One step per round: the load from other processes changes within seconds, so
# fine-grained interleaving gives steadier ratios than long rounds.
SCHEDULE = {"small": (10, 1, 60), "gpt2": (6, 1, 60), "quick": (2, 1, None)}
LR, BETAS, WEIGHT_DECAY, EPS = 3e-4, (0.9, 0.95), 0.1, 1e-8


def make_models(cfg, seed=0):
    """(gpt_scratch model, GPT2LMHeadModel) with identical weights, both in train mode, dropout 0."""
    import torch

    from gpt_scratch import GPTConfig, GPTForCausalLM, to_hf_gpt2

    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0,
    )
    ours = GPTForCausalLM(config).train()
    hf = to_hf_gpt2(ours).train()
    return ours, hf


def make_optimizer(model):
    import torch

    kw = dict(lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, eps=EPS)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), foreach=True, **kw)


def make_batches(cfg, n=4, seed=1234):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, cfg["vocab_size"], (cfg["batch"], cfg["block_size"]), generator=g) for _ in range(n)]


def make_step(model, opt, cfg, dtype, seed=0):
    """A closure running one training step on the next of a fixed set of batches; returns the loss tensor."""
    import torch

    from gpt_scratch.train.loop import forward_kwargs

    batches = make_batches(cfg, seed=1234 + seed)
    state = {"i": 0}
    bf16 = dtype == "bf16"

    def step():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x, **forward_kwargs(model)).loss  # as the training loop calls it
        loss.backward()
        opt.step()
        return loss

    return step


def flops_per_token(cfg):
    C, L, V, T = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg["block_size"]
    n_params = V * C + L * (12 * C * C + 13 * C) + 2 * C  # tied wte/lm_head counted once, no wpe
    return 6 * n_params + 12 * L * C * T


def timed_steps(step, n_steps, tokens_per_step):
    def run():
        t0 = now()
        for _ in range(n_steps):
            step()
        return n_steps * tokens_per_step / (now() - t0)

    return run


def bench_config(name, cfg, dtypes, rounds, steps, peaks, budget_s=None, compile_ours=False):
    import torch

    print(f"\n== {name}: {cfg}")
    tokens = cfg["batch"] * cfg["block_size"]
    results = {}
    for dtype in dtypes:
        ours, hf = make_models(cfg)  # same seed: identical weights and fresh optimizers for each dtype
        results["hf_attn_implementation"] = hf.config._attn_implementation
        runners = {}
        opts = {}
        models = {"gpt_scratch": ours, "transformers": hf}
        if compile_ours:
            compiled = torch.compile(ours)
            models["gpt_scratch_compiled"] = compiled
        for mname, m in models.items():
            opts[mname] = make_optimizer(m)
        steps_fn = {m: make_step(models[m], opts[m], cfg, dtype) for m in models}
        # Same first loss from the same weights: a cheap check that the two really are the same model.
        first = {m: steps_fn[m]().item() for m in ("gpt_scratch", "transformers")}
        if compile_ours:
            t0 = now()
            steps_fn["gpt_scratch_compiled"]()
            steps_fn["gpt_scratch_compiled"]()
            compile_s = now() - t0
        for m in models:  # warm-up (allocator, oneDNN primitive caches)
            steps_fn[m]()
        for m in models:
            runners[m] = timed_steps(steps_fn[m], steps, tokens)
        print(f"-- {name} {dtype}: first losses {first}; {rounds} rounds x {steps} steps")
        rates = paired_rounds(runners, rounds, budget_s=budget_s)
        fpt = flops_per_token(cfg)
        res = {
            "tokens_per_step": tokens,
            "first_loss": first,
            "tokens_per_s": {m: summarize(r) for m, r in rates.items()},
            "ratio_ours_over_hf": ratio_summary(rates, "gpt_scratch", "transformers"),
            "flops_per_token": fpt,
            "mfu": {m: summarize([fpt * r / (peaks[dtype] * 1e9) for r in rates[m]]) for m in rates},
            "optimizer": type(opts["gpt_scratch"]).__name__
            + (" fused" if opts["gpt_scratch"].defaults.get("fused") else " foreach"),
        }
        if compile_ours:
            res["compile_s"] = compile_s
            res["ratio_compiled_over_ours"] = ratio_summary(rates, "gpt_scratch_compiled", "gpt_scratch")
            res["ratio_compiled_over_hf"] = ratio_summary(rates, "gpt_scratch_compiled", "transformers")
        print(
            f"   ratio ours/hf {fmt_ratio(res['ratio_ours_over_hf'])}; "
            f"ours {res['tokens_per_s']['gpt_scratch']['median']:,.0f} tok/s MFU {res['mfu']['gpt_scratch']['median']:.1%}, "
            f"hf {res['tokens_per_s']['transformers']['median']:,.0f} tok/s MFU {res['mfu']['transformers']['median']:.1%}"
        )
        if compile_ours:
            print(f"   compiled: compile {compile_s:.1f} s, ratio compiled/ours {fmt_ratio(res['ratio_compiled_over_ours'])}")
        results[dtype] = res
        del ours, hf, opts, steps_fn, runners, models
    return results


def main(argv=None):
    p = base_parser("train_throughput", __doc__)
    p.add_argument("--configs", nargs="+", default=None, choices=["small", "gpt2"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=None, help="paired rounds per config/dtype (default per config)")
    p.add_argument("--steps", type=int, default=None, help="training steps per round (default per config)")
    p.add_argument("--budget-s", type=float, default=None, help="time budget of the timed rounds per config and dtype")
    p.add_argument("--force-bf16", action="store_true", help="run bf16 even where bf16 matmuls are slow")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(gpt_scratch) (slow to compile)")
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)

    configs = args.configs or (["quick"] if args.quick else ["small", "gpt2"])
    info = env_info()
    print(f"torch {info['torch']}, transformers {info['transformers']}, {info['torch_threads']} threads, {info['cpu']}")
    peaks = {d: measure_matmul_peak(d, n=256 if args.quick else 1024, seconds=0.3 if args.quick else 1.5) for d in ("fp32", "bf16")}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    dtypes = list(args.dtypes)
    skipped = {}
    if "bf16" in dtypes and not bf16_is_fast(peaks) and not args.force_bf16:
        dtypes.remove("bf16")
        skipped["bf16"] = (
            f"no fast bf16 matmul on this CPU (bf16 {peaks['bf16']:.1f} vs fp32 {peaks['fp32']:.0f} GFLOP/s: "
            f"torch uses a reference kernel without AVX512-BF16/AMX); --force-bf16 runs it anyway"
        )
        print("SKIPPED bf16: " + skipped["bf16"])
    results = {"env": info, "matmul_peak_gflops": peaks, "dtypes": dtypes, "skipped": skipped, "configs": {}}
    t_start = now()
    for name in configs:
        rounds, steps, budget = SCHEDULE[name]
        rounds = args.rounds or rounds
        steps = args.steps or steps
        budget = args.budget_s if args.budget_s is not None else budget
        cfg = CONFIGS[name]
        results["configs"][name] = {
            "config": cfg,
            "max_rounds": rounds,
            "steps_per_round": steps,
            **bench_config(name, cfg, dtypes, rounds, steps, peaks, budget_s=budget, compile_ours=args.compile),
        }
    results["wall_s"] = now() - t_start
    write_results(args.out, results)
    ratios = []
    for name, r in results["configs"].items():
        for d in dtypes:
            ratios.append(f"train {name} {d} {fmt_ratio(r[d]['ratio_ours_over_hf'])}")
    ratios += [f"train {d} skipped (slow {d} matmul)" for d in skipped]
    print("RATIOS: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
