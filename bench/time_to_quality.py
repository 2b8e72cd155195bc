"""Time to quality: the validation loss each training recipe reaches in the same wall-clock budget.

Every recipe goes through gpt_scratch's own training loop (gpt_scratch.train.train) on
tiny Shakespeare with the project's usual split (last 10% for validation). A short warm-up
run of each recipe measures its time per optimizer step on this machine; its schedule is
then sized so the whole run (setup, steps, final evaluation over the whole validation split,
export) fits in the budget, and the run's real wall time is reported beside it. Validation
loss is always over all 50,257 GPT-2 ids.

Rows:
  main-job-before      the main job's recipe before this bench (4 layers x 128, AdamW, cosine)
  transformers-gpt2    transformers' GPT2LMHeadModel of that shape and recipe, through the same loop
  main-job             configs/shakespeare.yaml as it is now (its own max_steps, unless they do not fit)

    python bench/time_to_quality.py                       # 10 minutes a run, 3 seeds: ~95 minutes
    python bench/time_to_quality.py --budget-s 180 --seeds 1337
    python bench/time_to_quality.py --quick               # smoke test: tiny model, seconds a run
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, base_parser, default_data_path, ensure_malloc_env, env_info, set_threads, write_results  # noqa: E402

# The main job's recipe as it stood before this bench (configs/shakespeare.yaml, 2026-11-30).
MAIN_JOB_BEFORE = dict(
    model="gpt", n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0, batch_size=16,
    learning_rate=3e-3, min_lr=3e-4, warmup_steps=30, weight_decay=0.1, grad_clip=1.0,
    mixed_precision="no", optimizer="adamw", lr_schedule="cosine", train_vocab="full",
)
QUICK_SHAPE = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, warmup_steps=2)
WARMUP_STEPS = 12  # steps timed to size each recipe's schedule
SAFETY = 0.92  # of the budget left after the measured fixed costs goes to steps


def current_main_job():
    import yaml

    with open(REPO / "configs" / "shakespeare.yaml") as f:
        cfg = yaml.safe_load(f)
    keep = {k: v for k, v in cfg.items() if k not in ("data", "out_dir", "seed", "eval_interval",
                                                       "eval_steps", "log_interval", "save_interval", "sample_tokens",
                                                       "keep_checkpoints", "resume")}
    return keep


def run_train(settings, data, out_dir, seed, max_steps, warmup=None, hf_model=False):
    """One run of the training loop; returns (final val loss, steps, tokens, wall seconds, seconds per step)."""
    import torch

    from gpt_scratch.train import TrainConfig
    from gpt_scratch.train import loop as training

    s = dict(settings)
    if warmup is not None:
        s["warmup_steps"] = warmup
    cfg = TrainConfig(data=data, out_dir=out_dir, seed=seed, max_steps=max_steps, eval_interval=0, eval_steps=0,
                      log_interval=max(1, min(10, max_steps // 3)), save_interval=0, keep_checkpoints=1,
                      sample_tokens=0, **s)
    build = training.build_model
    if hf_model:  # transformers' GPT-2 of the same shape, trained by the same loop
        from transformers import GPT2Config, GPT2LMHeadModel

        def build_hf(c):
            torch.manual_seed(c.seed)
            config = GPT2Config(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, n_positions=c.block_size,
                                resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)
            config.block_size = c.block_size  # what the exported folder's tokenizer length is read from
            return GPT2LMHeadModel(config)

        training.build_model = build_hf
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # each run picks its own mixed precision
    t0 = time.perf_counter()
    try:
        training.train(cfg)
    finally:
        training.build_model = build
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl")) if line.strip()]
    val = [r["val_loss"] for r in records if "val_loss" in r][-1]
    train_recs = [r for r in records if "tokens_per_sec" in r]
    last = train_recs[-1]
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    # the fastest logged interval: a moment when something else ran on the machine is not the recipe's speed
    fastest = max(r["tokens_per_sec"] for r in train_recs[-3:])
    return {"val_loss": val, "steps": last["step"], "tokens": last["tokens"], "wall_s": wall,
            "s_per_step": tokens_per_step / fastest}


def sized_run(name, settings, data, seed, budget_s, work, hf_model=False, own_steps=None):
    """Warm up, size the schedule to the budget, run; returns the run's figures.

    A recipe with a schedule of its own (`own_steps`) keeps it unless it would not fit the
    budget; the others get as many steps as fit.
    """
    warm_dir = os.path.join(work, f"{name}-warm-{seed}")
    warm = run_train(settings, data, warm_dir, seed, WARMUP_STEPS, warmup=2, hf_model=hf_model)
    fixed = warm["wall_s"] - WARMUP_STEPS * warm["s_per_step"]  # setup, evaluation, export
    steps = max(4, int(SAFETY * (budget_s - fixed) / warm["s_per_step"]))
    if own_steps:
        steps = min(steps, own_steps)
    warmup = min(settings.get("warmup_steps", 30), max(1, steps // 10))
    res = run_train(settings, data, os.path.join(work, f"{name}-{seed}"), seed, steps, warmup=warmup,
                    hf_model=hf_model)
    res["warmup_s_per_step"] = warm["s_per_step"]
    print(f"  {name} seed {seed}: val loss {res['val_loss']:.4f} after {res['steps']} steps "
          f"({res['tokens']:,} tokens) in {res['wall_s']:.0f} s (budget {budget_s:.0f} s)", flush=True)
    return res


def main(argv=None):
    p = base_parser("time_to_quality", __doc__)
    p.add_argument("--data", default=str(default_data_path()), help="tiny Shakespeare (or another text file)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock seconds per run (default 600)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 1337 1338 1339")
    p.add_argument("--rows", nargs="+", default=None, choices=["main-job-before", "transformers-gpt2", "main-job"])
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="torch threads of every run (default: the training loop's own choice, all cores); 1 keeps "
                        "a shared machine's other work from stalling multi-threaded kernels")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override settings of the main-job row (to try a lever)")
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)
    budget = args.budget_s or (15 if args.quick else 600)
    seeds = args.seeds or ([1337] if args.quick else [1337, 1338, 1339])
    before, now_ = dict(MAIN_JOB_BEFORE), current_main_job()
    current_steps = now_.pop("max_steps", None)
    from gpt_scratch.train.config import convert_setting

    for kv in args.set:
        k, v = kv.split("=", 1)
        now_[k] = convert_setting(k, v, from_text=True)  # as the command line parses it
    if args.quick:
        before.update(QUICK_SHAPE)
        now_.update(QUICK_SHAPE)
    if args.cpu_threads:
        before["cpu_threads"] = now_["cpu_threads"] = args.cpu_threads
    rows = {"main-job-before": (before, False), "transformers-gpt2": (before, True), "main-job": (now_, False)}
    chosen = args.rows or (["main-job-before", "main-job"] if args.quick else list(rows))
    info = env_info()
    print(f"torch {info['torch']}, {info['torch_threads']} threads, {info['cpu']}; budget {budget:.0f} s a run")
    results = {"env": info, "budget_s": budget, "seeds": seeds, "cpu_threads": args.cpu_threads or "all cores",
               "rows": {}}
    with tempfile.TemporaryDirectory() as work:
        for name in chosen:
            settings, hf = rows[name]
            print(f"== {name}: {settings}", flush=True)
            own = None if args.quick or name != "main-job" else current_steps
            runs = [sized_run(name, settings, args.data, seed, budget, work, hf_model=hf, own_steps=own)
                    for seed in seeds]
            losses = [r["val_loss"] for r in runs]
            results["rows"][name] = {
                "settings": settings, "runs": runs,
                "val_loss_mean": statistics.mean(losses), "val_loss_spread": max(losses) - min(losses),
                "steps_mean": statistics.mean(r["steps"] for r in runs),
                "tokens_mean": statistics.mean(r["tokens"] for r in runs),
                "wall_s_max": max(r["wall_s"] for r in runs),
            }
    write_results(args.out, results)
    line = "; ".join(f"{n} {r['val_loss_mean']:.3f} (spread {r['val_loss_spread']:.3f}, {r['tokens_mean']:,.0f} tokens)"
                     for n, r in results["rows"].items())
    print(f"RATIOS: val loss in {budget:.0f} s: {line}")


if __name__ == "__main__":
    main()
