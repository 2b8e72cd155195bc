"""Greedy generate() throughput: gpt_scratch vs transformers' GPT2LMHeadModel, same weights.

16-token random prompt, 200 new tokens (no early stop: eos disabled), batch 1
and 8, configs `small` and `gpt2`, fp32, KV cache on (transformers' default
DynamicCache for both). Weights are redrawn with a larger std than GPT-2's
init so that greedy text varies from token to token; the two models must
produce *identical* tokens (asserted: the script exits non-zero otherwise).

Rounds alternate the order (ours, hf, then hf, ours, ...); the ratio
(tokens/s ours / tokens/s hf) is taken per round: median (min-max).

    python bench/generate_throughput.py           # ~5-6 minutes on 2 cores
    python bench/generate_throughput.py --quick   # smoke test, seconds
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

CONFIGS = {
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50257),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "quick": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=50257),
}
# (max rounds, time budget in s for the timed rounds of one batch size, min rounds):
# a gpt2 batch-8 round is ~70 s here (both models), so gpt2 stops after 2 rounds
# once its budget is spent and the whole script stays near 5 minutes
SCHEDULE = {"small": (6, 30, 3), "gpt2": (3, 60, 2), "quick": (2, None, 2)}
PROMPT_LEN = 16
WEIGHT_STD = 0.1  # GPT-2's init (0.02) makes greedy decoding repeat one token forever


def make_models(cfg, seed=0):
    import torch

    from gpt_scratch import GPTConfig, GPTForCausalLM, to_hf_gpt2

    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0,
    )
    ours = GPTForCausalLM(config)
    with torch.no_grad():
        for p in ours.parameters():
            if p.ndim == 2:
                p.normal_(0.0, WEIGHT_STD)
    ours.eval()
    hf = to_hf_gpt2(ours).eval()
    return ours, hf


def gen_kwargs(new_tokens):
    # eos disabled: every call produces exactly new_tokens tokens, for both models.
    return dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                eos_token_id=None, pad_token_id=50256, use_cache=True)


def bench(name, cfg, batches, new_tokens, rounds, budget_s, min_rounds):
    import torch

    ours, hf = make_models(cfg)
    kw = gen_kwargs(new_tokens)
    out = {}
    for B in batches:
        g = torch.Generator().manual_seed(100 + B)
        prompt = torch.randint(0, cfg["vocab_size"] - 1, (B, PROMPT_LEN), generator=g)
        mask = torch.ones_like(prompt)
        tokens = {}

        def runner(model, key):
            def run():
                with torch.inference_mode():
                    t0 = now()
                    ids = model.generate(prompt, attention_mask=mask, **kw)
                    dt = now() - t0
                tokens.setdefault(key, ids)  # the first timed round's tokens are compared
                return B * new_tokens / dt

            return run

        with torch.inference_mode():  # warm-up: a short generate() of each
            for model in (ours, hf):
                model.generate(prompt, attention_mask=mask, **gen_kwargs(4))
        runners = {"gpt_scratch": runner(ours, "gpt_scratch"), "transformers": runner(hf, "transformers")}
        print(f"-- {name} batch {B}: max {rounds} rounds")
        rates = paired_rounds(runners, rounds, budget_s=budget_s, min_rounds=min_rounds)
        a, b = tokens["gpt_scratch"], tokens["transformers"]
        identical = bool(torch.equal(a, b))
        new = a[:, PROMPT_LEN:]
        distinct = len(set(new.flatten().tolist()))
        print(f"   identical tokens: {identical}; {distinct} distinct new tokens")
        if not identical:
            diff = (a != b).nonzero()
            print(f"   first difference at (row, position) {tuple(diff[0].tolist())}")
        res = {
            "batch": B,
            "prompt_len": PROMPT_LEN,
            "new_tokens": new_tokens,
            "identical_tokens": identical,
            "distinct_new_tokens": distinct,
            "tokens_per_s": {m: summarize(r) for m, r in rates.items()},
            # per decoding step (one token for each of the B rows), prefill included
            "ms_per_step": {m: summarize([1000 * B / r for r in rs]) for m, rs in rates.items()},
            "ratio_ours_over_hf": ratio_summary(rates, "gpt_scratch", "transformers"),
        }
        print(
            f"   ratio ours/hf {fmt_ratio(res['ratio_ours_over_hf'])}; ms/step ours "
            f"{res['ms_per_step']['gpt_scratch']['median']:.2f}, hf {res['ms_per_step']['transformers']['median']:.2f}"
        )
        out[f"batch{B}"] = res
    return out


def main(argv=None):
    p = base_parser("generate_throughput", __doc__)
    p.add_argument("--configs", nargs="+", default=None, choices=["small", "gpt2"])
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=None)
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)

    configs = args.configs or (["quick"] if args.quick else ["small", "gpt2"])
    batches = args.batches or ([1, 4] if args.quick else [1, 8])
    new_tokens = args.new_tokens or (20 if args.quick else 200)
    info = env_info()
    print(f"torch {info['torch']}, transformers {info['transformers']}, {info['torch_threads']} threads, {info['cpu']}")
    results = {"env": info, "dtype": "fp32", "weight_std": WEIGHT_STD, "configs": {}}
    t_start = now()
    for name in configs:
        rounds, budget, min_rounds = SCHEDULE[name]
        rounds = args.rounds or rounds
        budget = args.budget_s if args.budget_s is not None else budget
        print(f"\n== {name}: {CONFIGS[name]}")
        results["configs"][name] = {"config": CONFIGS[name], "max_rounds": rounds,
                                    **bench(name, CONFIGS[name], batches, new_tokens, rounds, budget, min(min_rounds, rounds))}
    results["wall_s"] = now() - t_start
    all_identical = all(r["identical_tokens"] for c in results["configs"].values() for k, r in c.items() if k.startswith("batch"))
    results["all_identical_tokens"] = all_identical
    write_results(args.out, results)
    ratios = [
        f"generate {name} b{r['batch']} {fmt_ratio(r['ratio_ours_over_hf'])}"
        for name, c in results["configs"].items() for k, r in c.items() if k.startswith("batch")
    ]
    print("RATIOS: " + "; ".join(ratios) + f"; identical tokens: {all_identical}")
    assert all_identical, "gpt_scratch and transformers generated different tokens from identical weights"


if __name__ == "__main__":
    main()
