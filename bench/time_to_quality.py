"""Time to quality: the validation loss each training recipe reaches in the same wall-clock budget.

Every recipe goes through gpt_scratch's own training loop (gpt_scratch.train.train) on
tiny Shakespeare with the project's usual split (last 10% for validation), with the
README launch's threads (all cores) unless --cpu-threads says otherwise. A short warm-up
run of each recipe measures its time per optimizer step on this machine; a recipe
without a schedule of its own is then sized so the whole run (setup, steps, final
evaluation over the whole validation split, export) fits in the budget; its real wall
time is reported beside it. Figures: validation bits per byte (the field's
tokenizer-independent unit) and nats per token, over all 50,257 GPT-2 ids.

Rows:
  main-job-today     configs/shakespeare.yaml as it stood before issue 20 (Muon, dropout 0.15, 4 x 128, 1,000 steps)
  main-job           configs/shakespeare.yaml as it is now (its own max_steps, unless they do not fit)
  transformers-gpt2  transformers' GPT2LMHeadModel of the main job's shape, trained the usual way (AdamW, warm-up +
                     cosine, full vocabulary, fp32, no dropout) through the same loop
  bigram             configs/bigram.yaml (its own max_steps)

    python bench/time_to_quality.py                       # 10 minutes a run, 3 seeds, 4 rows: ~2.5 hours
    python bench/time_to_quality.py --budget-s 180 --seeds 1337 --rows main-job --set ema_decay=0.99
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

# The main job's recipe before issue 20 (configs/shakespeare.yaml at d510bf4, 2026-12-01).
MAIN_JOB_TODAY = dict(
    model="gpt", n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.15, batch_size=16, learning_rate=3e-3,
    min_lr=3e-4, warmup_steps=60, weight_decay=0.3, grad_clip=1.0, mixed_precision="auto", optimizer="muon",
    lr_schedule="cosine", train_vocab="data", max_steps=1000,
)
# "The usual way": AdamW, warm-up + cosine, full vocabulary, fp32, no dropout (the main job's recipe before issue 12).
USUAL_WAY = dict(dropout=0.0, learning_rate=3e-3, min_lr=3e-4, warmup_steps=30, weight_decay=0.1, grad_clip=1.0,
                 mixed_precision="no", optimizer="adamw", lr_schedule="cosine", train_vocab="full")
QUICK_SHAPE = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, warmup_steps=2)
WARMUP_STEPS = 12  # steps timed to size each recipe's schedule
SAFETY = 0.92  # of the budget left after the measured fixed costs goes to steps


def shipped(name):
    """A shipped config's settings, without the ones that say where and how often (the bench sets those)."""
    import yaml

    with open(REPO / "configs" / f"{name}.yaml") as f:
        cfg = yaml.safe_load(f)
    return {k: v for k, v in cfg.items() if k not in ("data", "out_dir", "seed", "eval_interval", "eval_steps",
                                                     "log_interval", "save_interval", "sample_tokens",
                                                     "keep_checkpoints", "resume")}


# A run is `scripts/train.py`'s own main() in a process of its own (the wall time is launch to exported model); for
# transformers' GPT-2 the loop's model builder is swapped for GPT2LMHeadModel of the same shape first.
CHILD = """
import sys, torch
from gpt_scratch.train import loop
if sys.argv[1] == "transformers":
    from transformers import GPT2Config, GPT2LMHeadModel

    def build_hf(c):
        torch.manual_seed(c.seed)
        config = GPT2Config(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, n_positions=c.block_size,
                            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)
        config.block_size = c.block_size  # what the exported folder's tokenizer length is read from
        return GPT2LMHeadModel(config)

    loop.build_model = build_hf
loop.main(sys.argv[2:])
"""


def run_train(settings, data, out_dir, seed, max_steps, warmup=None, hf_model=False):
    """One run of the training loop; its final val loss and bits per byte, steps, tokens, wall and step seconds."""
    import subprocess

    s = {k: v for k, v in settings.items() if k != "max_steps"}
    s.update(data=data, out_dir=out_dir, seed=seed, max_steps=max_steps, eval_interval=0, log_interval=max(1, min(
        10, max_steps // 3)), save_interval=0, keep_checkpoints=1, sample_tokens=0, eval_steps=s.get("eval_steps", 0))
    if warmup is not None:
        s["warmup_steps"] = warmup
    argv = [a for k, v in s.items() for a in (f"--{k}", "" if v is None else str(v))]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, "transformers" if hf_model else "gpt_scratch"] + argv,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"training failed:\n{p.stderr[-3000:]}")
    records = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl")) if line.strip()]
    val = [r for r in records if "val_loss" in r][-1]
    train_recs = [r for r in records if "tokens_per_sec" in r]
    last = train_recs[-1]
    tokens_per_step = s["batch_size"] * s["block_size"] * s.get("gradient_accumulation_steps", 1)
    # the fastest logged interval: a moment when something else ran on the machine is not the recipe's speed
    fastest = max(r["tokens_per_sec"] for r in train_recs[-3:])
    return {"val_loss": val["val_loss"], "val_bpb": val["val_bpb"], "steps": last["step"], "tokens": last["tokens"],
            "wall_s": wall, "s_per_step": tokens_per_step / fastest}


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
    print(f"  {name} seed {seed}: val {res['val_bpb']:.4f} bits per byte, {res['val_loss']:.4f} nats per token after "
          f"{res['steps']} steps "
          f"({res['tokens']:,} tokens) in {res['wall_s']:.0f} s (budget {budget_s:.0f} s)", flush=True)
    return res


def main(argv=None):
    p = base_parser("time_to_quality", __doc__)
    p.add_argument("--data", default=str(default_data_path()), help="tiny Shakespeare (or another text file)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock seconds per run (default 600)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 1337 1338 1339")
    p.add_argument("--rows", nargs="+", default=None, choices=list(ROWS))
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="torch threads of every run (default: the training loop's own choice, all cores, as the README "
                        "launch runs); 1 keeps a shared machine's other work from stalling multi-threaded kernels")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override settings of the main-job row (to try a lever)")
    args = p.parse_args(argv)
    print(ensure_malloc_env())
    set_threads(args.threads)
    budget = args.budget_s or (15 if args.quick else 600)
    seeds = args.seeds or ([1337] if args.quick else [1337, 1338, 1339])
    from gpt_scratch.train.config import convert_setting

    rows = {name: dict(make()) for name, make in ROWS.items()}
    for kv in args.set:
        k, v = kv.split("=", 1)
        rows["main-job"][k] = convert_setting(k, v, from_text=True)  # as the command line parses it
    for settings in rows.values():
        if args.quick:
            settings.update(QUICK_SHAPE, max_steps=None, eval_steps=8)  # not the whole split: seconds a run
        if args.cpu_threads:
            settings["cpu_threads"] = args.cpu_threads
    chosen = args.rows or (["main-job-today", "main-job"] if args.quick else list(ROWS))
    info = env_info()
    print(f"torch {info['torch']}, {info['torch_threads']} threads, {info['cpu']}; budget {budget:.0f} s a run")
    results = {"env": info, "budget_s": budget, "seeds": seeds, "cpu_threads": args.cpu_threads or "all cores",
               "rows": {}}
    with tempfile.TemporaryDirectory() as work:
        for name in chosen:
            settings = rows[name]
            print(f"== {name}: {settings}", flush=True)
            runs = [sized_run(name, settings, args.data, seed, budget, work, hf_model=name == "transformers-gpt2",
                              own_steps=settings.get("max_steps")) for seed in seeds]
            bpb, nats = [r["val_bpb"] for r in runs], [r["val_loss"] for r in runs]
            results["rows"][name] = {
                "settings": settings, "runs": runs, "val_bpb_mean": statistics.mean(bpb),
                "val_bpb_spread": max(bpb) - min(bpb), "val_loss_mean": statistics.mean(nats),
                "val_loss_spread": max(nats) - min(nats), "steps_mean": statistics.mean(r["steps"] for r in runs),
                "tokens_mean": statistics.mean(r["tokens"] for r in runs), "wall_s_max": max(r["wall_s"] for r in runs),
            }
    write_results(args.out, results)
    line = "; ".join(f"{n} {r['val_bpb_mean']:.3f} bits per byte (spread {r['val_bpb_spread']:.3f}; "
                     f"{r['val_loss_mean']:.3f} nats per token, {r['tokens_mean']:,.0f} tokens, at most "
                     f"{r['wall_s_max']:.0f} s)" for n, r in results["rows"].items())
    print(f"RATIOS: validation in {budget:.0f} s: {line}")


ROWS = {
    "main-job-today": lambda: MAIN_JOB_TODAY,
    "main-job": lambda: shipped("shakespeare"),
    "transformers-gpt2": lambda: dict({k: v for k, v in shipped("shakespeare").items() if k in (
        "n_layer", "n_head", "n_embd", "block_size", "batch_size")}, model="gpt", **USUAL_WAY),
    "bigram": lambda: shipped("bigram"),
}


if __name__ == "__main__":
    main()
