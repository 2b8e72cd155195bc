"""The training loop on Accelerate: one CPU, one GPU, several processes (DDP/FSDP).

`train()` reads top to bottom as setup, fit, evaluate, finish. The pieces it
uses live by concern: settings in train_config.py, checkpoints in
checkpoints.py, tokens/s, MFU and the metrics log in metrics.py, data in data.py.

The loop is the usual Accelerate recipe (prepare, accumulate, clip, step) with:

* exact resume: the dataloader has its own generator and a seedable sampler, so
  iterating it never draws from the global RNG that dropout uses; the step,
  epoch and data position live in a TrainState registered with
  `accelerator.register_for_checkpointing`, saved with model, optimizer and
  every process's RNG; a run stopped at N/2 and resumed in a new process ends
  bit-identical to an uninterrupted one (on CPU);
* a stop on a non-finite loss or gradient *before* the optimizer step that would
  write it into the weights: the last checkpoint stays the last finite one;
* a clean stop on SIGTERM/SIGINT: the current step finishes, a checkpoint is
  written, the process exits 0.

The learning rate is a pure function of the step (warmup, then cosine to
lr_decay_steps), set on the optimizer each step: nothing to save for it, and
no prepared scheduler stepping once per process.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys

import torch

from .checkpoints import (CHECKPOINT_RE, COMPLETE_FILE, STATE_FILE, TrainState, check_checkpoint, disk_fault,
                          list_checkpoints, remove_stale_temporaries, resolve_resume,
                          save_checkpoint)
from .errors import CheckpointError, ConfigError, DataError, EnvironmentFault, GptScratchError, run_cli
from .metrics import (MetricsLog, Throughput, cpuinfo_field, flops_per_token, matmul_peak, measure_matmul_peak,
                      plot_losses)
from .optim import lr_at, make_optimizer
from .train_vocab import used_token_ids, zero_unused_rows
from .train_config import TrainConfig, build_parser, parse_config

ResumeError = CheckpointError  # the name before errors.py
SHAPE_FIELDS = ("model", "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")
WORKING_LAUNCHES = (
    "accelerate launch --config_file configs/accelerate/cpu-2proc.yaml scripts/train.py {args}",
    "torchrun --standalone --nproc_per_node 2 scripts/train.py {args}",
)

__all__ = ["TrainConfig", "parse_config", "build_parser", "lr_at", "train", "main", "ConfigError", "ResumeError",
           "CheckpointError", "DataError", "list_checkpoints", "check_checkpoint", "STATE_FILE", "COMPLETE_FILE",
           "CHECKPOINT_RE", "measure_matmul_peak", "flops_per_token", "plot_losses"]


class TrainingDiverged(GptScratchError):
    """The loss or the gradients became NaN/inf: the run stopped before they reached the weights."""

    exit_code = 1


# ---------------------------------------------------------------- the model

def build_model(cfg: TrainConfig):
    """A fresh model of cfg's shape, or the pretrained one cfg.init_from names."""
    if cfg.init_from:
        return load_pretrained(cfg.init_from, cfg.block_size, cfg.dropout)
    if cfg.model == "bigram":
        from .configuration_bigram import BigramConfig
        from .modeling_bigram import BigramForCausalLM

        return BigramForCausalLM(BigramConfig(n_embd=cfg.n_embd, block_size=cfg.block_size))
    from .configuration_gpt import GPTConfig
    from .modeling_gpt import GPTForCausalLM

    return GPTForCausalLM(
        GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                  dropout=cfg.dropout, bias=cfg.bias)
    )


def check_model_fits(cfg: TrainConfig, device_type, available=None):
    """Refuse a model whose weights, gradients and AdamW state (16 bytes a parameter) cannot fit in memory.

    Without this, a mistyped n_layer (say 1e20) allocates until the kernel kills the process.
    The model is built on the CPU first on every device, so RAM needs at least its weights.
    """
    if cfg.model != "gpt" or cfg.init_from:
        return
    e = cfg.n_embd
    n = 50257 * e + cfg.block_size * e + cfg.n_layer * (12 * e * e + 13 * e) + 2 * e
    need = n * (16 if device_type == "cpu" else 4)
    if available is None:
        try:
            with open("/proc/meminfo") as f:
                available = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError):
            return
    if need > available:
        raise ConfigError(
            f"a GPT with n_layer={cfg.n_layer}, n_embd={cfg.n_embd} has ~{n / 1e6:,.0f}M parameters and needs "
            f"~{need / 2**30:,.1f} GiB for weights, gradients and optimizer state; {available / 2**30:,.1f} GiB are "
            "available. Lower n_layer or n_embd")


def load_pretrained(source, block_size, dropout):
    """A GPTForCausalLM from a gpt_scratch folder, a transformers GPT-2 folder or a Hub id, for fine-tuning.

    GPT-2 weights go through convert.from_hf_gpt2. The context is cropped to
    `block_size` (the first positions of the table are kept, as nanoGPT's
    crop_block_size does) and dropout is the run's.
    """
    from transformers import AutoConfig, GPT2LMHeadModel

    from .modeling_gpt import GPTForCausalLM

    hint = ("pass a folder written by save_pretrained (a gpt_scratch model folder or a transformers GPT-2), "
            "or a Hub id such as openai-community/gpt2 with network access")
    local = os.path.isdir(source)
    if not local and (os.path.exists(source) or source.startswith((".", "/")) or source.count("/") > 1):
        raise ConfigError(f"init_from {source!r} is not a folder; {hint}")
    try:
        kind = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"init_from {source!r}: cannot read its config ({why}); {hint}") from None
    try:
        if kind == "gpt2":
            from .convert import from_hf_gpt2

            model = from_hf_gpt2(GPT2LMHeadModel.from_pretrained(source))
        elif kind == "gpt_scratch":
            model = GPTForCausalLM.from_pretrained(source)
        else:
            raise ConfigError(f"init_from {source!r} is a {kind!r} model; only GPT-2 and gpt_scratch GPTs can be "
                              "fine-tuned here")
    except (OSError, ValueError) as e:
        if isinstance(e, GptScratchError):
            raise
        raise ConfigError(f"init_from {source!r}: cannot load its weights ({str(e).splitlines()[0]}); {hint}") from None
    old = model.config
    if block_size > old.block_size:
        raise ConfigError(f"block_size {block_size} is longer than init_from {source!r}'s context "
                          f"({old.block_size} positions); use --block_size {old.block_size} or less")
    config = copy.deepcopy(old)
    config.block_size, config.dropout = block_size, dropout
    new = GPTForCausalLM(config)
    sd = model.state_dict()
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size]
    new.load_state_dict(sd, strict=True)
    new.tie_weights()
    return new.float().train()


def model_shape(model) -> dict:
    c = model.config
    shape = {"model": "bigram" if c.model_type.endswith("bigram") else "gpt"}
    for k in SHAPE_FIELDS[1:]:
        shape[k] = getattr(c, k, None)
    return shape


def forward_kwargs(model):
    """gpt_scratch's GPT returns only the loss when told (skip_logits); other models get the plain call."""
    from .modeling_gpt import GPTForCausalLM

    return {"skip_logits": True} if isinstance(model, GPTForCausalLM) else {}


# ---------------------------------------------------------------- the machine and the launch

def cpu_threads(cfg, accelerator):
    """Threads for this process: the setting, else OMP_NUM_THREADS, else cores shared by the local processes.

    `accelerate launch` exports OMP_NUM_THREADS=1 unless told otherwise, which
    would leave all but one core idle in a single-process CPU run; that value
    is not taken as the user's choice.
    """
    if cfg.cpu_threads:
        return cfg.cpu_threads
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    if os.environ.get("OMP_NUM_THREADS") and not launched_by_accelerate:
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores // max(1, local))


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # the instructions that make bf16 matmuls fast on x86


def cpu_bf16_flags(cpuinfo="/proc/cpuinfo"):
    """The bf16 matrix instructions this CPU lists, or None where the list cannot be read (not Linux)."""
    flags = cpuinfo_field("flags", cpuinfo)
    if flags is None:
        return None
    return [flag for flag in BF16_CPU_FLAGS if flag in flags.split()]


def cpu_bf16_is_fast():
    """(fast?, why): by the CPU's flags where Linux lists them, which a busy machine cannot skew;
    elsewhere by timing bf16 against fp32 matmuls (fast = at least half the fp32 rate)."""
    flags = cpu_bf16_flags()
    if flags is not None:
        return bool(flags), ("this CPU has " + " and ".join(flags) if flags else
                             "this CPU has no bf16 matrix instructions (no avx512_bf16 or amx_bf16 in its flags)")
    peaks = {dt: measure_matmul_peak(torch.device("cpu"), dt, seconds=0.05, n=256, rounds=2)
             for dt in (torch.float32, torch.bfloat16)}
    fast = peaks[torch.bfloat16] >= 0.5 * peaks[torch.float32]
    return fast, f"bf16 matmuls ran at {peaks[torch.bfloat16] / 1e9:.1f} against fp32's {peaks[torch.float32] / 1e9:.0f} GFLOP/s"


def auto_mixed_precision(use_cpu):
    """mixed_precision auto: bf16 on a GPU that has it or a CPU with fast bf16 matmuls, else no."""
    if use_cpu:
        return "bf16" if cpu_bf16_is_fast()[0] else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def _check_bf16_is_fast(cfg):
    """bf16 on a CPU without bf16 instructions (AVX2 only) runs ~100x slower than fp32: refuse it up front."""
    if cfg.mixed_precision != "bf16":
        return
    fast, why = cpu_bf16_is_fast()
    if not fast:
        raise ConfigError(f"mixed_precision bf16 would run many times slower than fp32 here: {why}; "
                          "use --mixed_precision no (or auto, which picks bf16 only where it is fast)")


def check_launch(world, env=None, argv=None):
    """Refuse a launch that asked for more processes than it started (each would train alone, or one would).

    `accelerate launch --cpu --num_processes 2`, and config files with
    `distributed_type: MULTI_CPU` and no mpirun hostfile, go to Accelerate's
    single-process launcher: it exports MASTER_ADDR/MASTER_PORT for the
    processes it was asked for, but starts one, with no WORLD_SIZE or RANK.
    """
    env = os.environ if env is None else env
    args = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    fixes = "\n".join("  " + c.format(args=args) for c in WORKING_LAUNCHES)
    launched = int(env.get("WORLD_SIZE", "1"))
    if launched != world:
        raise ConfigError(f"{launched} processes were launched but Accelerate sees {world}, so each would train "
                          f"alone; on CPU start them with one of:\n{fixes}")
    by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in env
    mpi = any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"))
    if by_accelerate and world == 1 and "MASTER_ADDR" in env and "RANK" not in env and not mpi:
        raise ConfigError(
            "accelerate launch was asked for several processes but started ONE (accelerate 1.15 runs "
            "`--cpu --num_processes N` and `distributed_type: MULTI_CPU` configs without an mpirun hostfile in "
            f"a single process). For several CPU processes use one of:\n{fixes}\n"
            "(for one process: python scripts/train.py ...)")


class _QuietExpectedWarnings(logging.Filter):
    """Drop Accelerate's 'Removed shared tensor' warning when the names are exactly the model's tied weights.

    The tie is by design (save_pretrained stores it once and re-ties on load);
    any other shared tensor still warns.
    """

    def __init__(self, tied):
        super().__init__()
        self.tied = set(tied)

    @classmethod
    def install(cls, tied):
        """On Accelerate's save logger, replacing one an earlier run in this process installed."""
        log = logging.getLogger("accelerate.utils.other")
        for old in [f for f in log.filters if isinstance(f, cls)]:
            log.removeFilter(old)
        log.addFilter(cls(tied))

    def filter(self, record):
        msg = record.getMessage()
        m = re.search(r"Removed shared tensor (\{.*?\}) while saving", msg)
        if not m:
            return True
        try:
            names = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            return True
        return not (names and set(names) <= self.tied)


# ---------------------------------------------------------------- the run's parts

class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, then saving a checkpoint", file=sys.stderr)

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def batches(loader, accelerator, state: TrainState):
    """Training batches forever, epoch after epoch, resuming at state's (epoch, batch_in_epoch)."""
    while True:
        loader.set_epoch(state.epoch)
        it = loader
        if state.batch_in_epoch:
            it = accelerator.skip_first_batches(loader, state.batch_in_epoch)
            it.set_epoch(state.epoch)  # its epoch counter restarts at 0
        for batch in it:
            state.batch_in_epoch += 1
            yield batch
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


@dataclasses.dataclass
class Run:
    """Everything setup() builds and the later stages use."""

    cfg: TrainConfig
    accelerator: object
    model: object  # prepared (DDP/FSDP-wrapped where that applies)
    raw_model: object  # the model itself: export, shape, sampling
    forward: object  # what the loop calls: the prepared model, compiled if asked
    fwd_kw: dict  # how the loop calls the model (evaluation too)
    optimizer: object
    train_loader: object
    val_loader: object
    state: TrainState
    metrics: MetricsLog
    throughput: Throughput
    tokens_per_step: int
    batch_log: object = None
    train_kw: dict = dataclasses.field(default_factory=dict)  # training steps only: the restricted vocabulary

    @property
    def world(self):
        return self.accelerator.num_processes

    def log(self, record):
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        self.metrics.append(record)

    def save(self):
        save_checkpoint(self.accelerator, self.cfg.out_dir, self.state,
                        {"model_shape": model_shape(self.raw_model), "config": dataclasses.asdict(self.cfg)},
                        self.cfg.keep_checkpoints)
        self.throughput.restart(self.state.tokens_seen)

    def close(self):
        if self.batch_log is not None:
            self.batch_log.close()


# ---------------------------------------------------------------- the run

def train(cfg: TrainConfig):
    """Train per `cfg`; returns the path of the exported model folder (None when stopped by a signal)."""
    with _callers_threads_restored():  # setup() sizes torch's threads for training
        run = setup(cfg)
        try:
            stopped = fit(run)
        finally:
            run.close()
        if stopped:
            return None
        val_loss = evaluate(run.forward, run.val_loader, cfg.eval_steps, run.accelerator, run.fwd_kw)
        run.log({"step": run.state.step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))})
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"the final validation loss is {val_loss}: the model is not exported. "
                                   f"Lower --learning_rate (now {cfg.learning_rate}) and start again")
        run.accelerator.print(f"final val loss {val_loss:.4f} (perplexity {math.exp(min(val_loss, 50)):.1f})")
        return finish(run)


@contextlib.contextmanager
def _callers_threads_restored():
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def setup(cfg: TrainConfig) -> Run:
    """Accelerator, data, model, optimizer, loaders, resume: everything before the first step."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader

    from .data import collate, load_training_data

    use_cpu = cfg.cpu or not torch.cuda.is_available()
    if cfg.mixed_precision == "auto":
        cfg = dataclasses.replace(cfg, mixed_precision=auto_mixed_precision(use_cpu))
    if cfg.mixed_precision == "fp16" and use_cpu:
        raise ConfigError("mixed_precision fp16 needs a GPU; use bf16 on CPU")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(f"out_dir {cfg.out_dir} is a file, not a folder; choose another --out_dir")
    accelerator = Accelerator(
        cpu=use_cpu,  # without cpu=True, CPU processes under torchrun each train alone
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=_tensorboard_if_installed(),
        project_dir=cfg.out_dir,
    )
    check_launch(accelerator.num_processes)
    world, say = accelerator.num_processes, accelerator.print
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg, accelerator))
        _check_bf16_is_fast(cfg)
    set_seed(cfg.seed)
    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create out_dir {cfg.out_dir} ({e.strerror or e}); choose another --out_dir") from None
    if accelerator.is_main_process:
        remove_stale_temporaries(cfg.out_dir)  # left by a save that never finished
    accelerator.wait_for_everyone()

    train_ds, val_ds = load_training_data(cfg, accelerator)
    check_model_fits(cfg, accelerator.device.type)
    model = build_model(cfg)
    if cfg.init_from:  # the shape is the pretrained model's: record it as this run's settings
        c = model.config
        cfg = dataclasses.replace(cfg, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, bias=c.bias)
        say(f"init_from {cfg.init_from}: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
            f"context {c.block_size}")
    _QuietExpectedWarnings.install(getattr(model, "_tied_weights_keys", None) or ())
    train_kw = {}
    if cfg.train_vocab == "data":
        ids = used_token_ids(train_ds, model.config.vocab_size)
        zero_unused_rows(model, ids)  # a no-op on a resumed run: they stayed zero
        train_kw = {"loss_vocab_ids": ids.to(accelerator.device)}
        say(f"train_vocab data: the loss covers the {len(ids):,} ids the training split uses "
            f"(of {model.config.vocab_size:,}); the others' embeddings are held at zero")
    resume_path, _ = resolve_resume(cfg.resume, cfg.out_dir, world, cfg.max_steps, model_shape(model), say)
    optimizer = make_optimizer(model, cfg, accelerator.device.type)
    # the loader's own generator: shuffling must not consume the global RNG that dropout uses
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed))
    # a generator here too: starting to iterate a loader draws a seed from it, and an evaluation
    # (which a run stopped at that step skips) must not shift the dropout RNG either
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate,
                            generator=torch.Generator().manual_seed(cfg.seed))
    if len(train_loader) // world == 0:
        raise ConfigError(
            f"the training split has {len(train_ds)} blocks, fewer than one batch per process "
            f"({cfg.batch_size} x {world}); lower batch_size or block_size, or use more text"
        )
    raw = model
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if resume_path:
        accelerator.load_state(resume_path)
        say(f"resumed from {resume_path} at step {state.step}")
    metrics = MetricsLog(cfg.out_dir, enabled=accelerator.is_main_process)
    metrics.keep_until(state.step)
    if accelerator.is_main_process:
        with open(os.path.join(cfg.out_dir, "run_config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    accelerator.init_trackers("gpt_scratch", config={k: v for k, v in dataclasses.asdict(cfg).items() if v is not None})

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * world
    peak, peak_now = matmul_peak(accelerator.device, torch.bfloat16 if cfg.mixed_precision != "no" else torch.float32)
    n_params = sum(p.numel() for p in raw.parameters())
    say(f"{cfg.model}: {n_params / 1e6:.2f}M parameters | {len(train_ds)} train / {len(val_ds)} val blocks of "
        f"{cfg.block_size} tokens | {world} process(es) on {accelerator.device} (world size {world}) | "
        f"{tokens_per_step} tokens/step | matmul peak {peak / 1e9:,.0f} GFLOP/s"
        + (f" (best seen here; {peak_now / 1e9:,.0f} now: the machine is busy)" if peak_now < 0.9 * peak else ""))
    batch_log = None
    if cfg.record_batches:
        batch_log = open(os.path.join(cfg.out_dir, f"batches-rank{accelerator.process_index}.jsonl"), "a")
    return Run(cfg=cfg, accelerator=accelerator, model=model, raw_model=raw,
               forward=torch.compile(model) if cfg.compile else model, fwd_kw=forward_kwargs(raw),
               optimizer=optimizer, train_loader=train_loader, val_loader=val_loader, state=state, metrics=metrics,
               throughput=Throughput(flops_per_token(raw, cfg.block_size, len(train_kw["loss_vocab_ids"]) if train_kw else None), peak, world),
               tokens_per_step=tokens_per_step, batch_log=batch_log, train_kw=train_kw)


def fit(run: Run) -> bool:
    """Optimizer steps up to max_steps, with logging, evaluations and checkpoints; True if stopped by a signal."""
    from tqdm.auto import tqdm

    cfg, acc, state = run.cfg, run.accelerator, run.state
    stop = StopFlag()
    stop.install()
    bar = tqdm(total=cfg.max_steps, initial=state.step, disable=not acc.is_main_process, dynamic_ncols=True,
               desc="train")
    stream = batches(run.train_loader, acc, state)
    run.throughput.restart(state.tokens_seen)
    losses = []
    try:
        while state.step < cfg.max_steps:
            lr = lr_at(state.step, cfg)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            run.forward.train()
            for micro in range(cfg.gradient_accumulation_steps):
                batch = next(stream)
                if run.batch_log is not None:
                    run.batch_log.write(json.dumps([_block_hash(b) for b in batch["input_ids"]]) + "\n")
                with acc.accumulate(run.model):
                    loss = run.forward(input_ids=batch["input_ids"], labels=batch["labels"], **run.fwd_kw,
                                       **run.train_kw).loss
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
                    _stop_if_not_finite(run, loss, grad_norm, micro)
                    run.optimizer.step()
                    run.optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
            state.step += 1
            state.tokens_seen += run.tokens_per_step
            bar.update(1)

            if state.step % cfg.log_interval == 0 or state.step == cfg.max_steps:
                train_loss = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
                tps, mfu = run.throughput.measure(state.tokens_seen)
                run.log({"step": state.step, "train_loss": train_loss, "lr": lr, "tokens_per_sec": tps, "mfu": mfu,
                         "tokens": state.tokens_seen, "world_size": run.world})
                bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
                losses = []

            if cfg.eval_interval and state.step % cfg.eval_interval == 0 and state.step < cfg.max_steps:
                val_loss = evaluate(run.forward, run.val_loader, cfg.eval_steps, acc, run.fwd_kw)
                run.log({"step": state.step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))})
                if acc.is_main_process:
                    bar.write(f"step {state.step}: val loss {val_loss:.4f}")
                run.throughput.restart(state.tokens_seen)  # evaluation is not training throughput

            stopping = _any_process(stop.requested, acc)
            if state.step == cfg.max_steps or stopping or (cfg.save_interval and state.step % cfg.save_interval == 0):
                run.save()
            if stopping:
                acc.print(f"stopped at step {state.step}; checkpoint written. Continue with --resume auto")
                return True
    finally:
        bar.close()
        stop.restore()
    return False


def _stop_if_not_finite(run, loss, grad_norm, micro):
    """Raise TrainingDiverged, on every process alike, before a NaN/inf reaches optimizer.step()."""
    bad = not torch.isfinite(loss.detach()).item() or (grad_norm is not None and not math.isfinite(float(grad_norm)))
    if not _any_process(bad, run.accelerator):
        return
    cfg, step = run.cfg, run.state.step + 1
    what = f"loss {loss.item()}" if not math.isfinite(loss.item()) else f"gradient norm {float(grad_norm)}"
    done = list_checkpoints(cfg.out_dir)
    kept = (f"the newest checkpoint, {done[-1]}, holds finite weights (resume it, or an earlier checkpoint-STEP "
            "if it diverges again)" if done else "no checkpoint was written before it")
    clip = f"--grad_clip 1.0 (now {cfg.grad_clip})" if cfg.grad_clip <= 0 else f"a smaller --grad_clip (now {cfg.grad_clip})"
    raise TrainingDiverged(
        f"non-finite {what} at step {step} (micro-batch {micro + 1}): stopped before the optimizer step, so no "
        f"weight was changed by it; {kept}. Likely fix: lower --learning_rate (now {cfg.learning_rate}) or "
        f"--warmup_steps longer (now {cfg.warmup_steps}), or {clip}")


@torch.no_grad()
def evaluate(model, loader, max_batches, accelerator, fwd_kw=None):
    """Mean validation loss over the first `max_batches` batches (0 = all), across processes."""
    model.eval()
    total, count = torch.zeros((), device=accelerator.device), 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        total += model(input_ids=batch["input_ids"], labels=batch["labels"], **(fwd_kw or {})).loss.float()
        count += 1
    mean = accelerator.reduce(total / max(count, 1), reduction="mean")
    model.train()
    return mean.item()


def finish(run: Run):
    """Export the model folder (every process takes part in gathering it), print a sample, close trackers."""
    from accelerate.utils import DistributedType

    acc, cfg = run.accelerator, run.cfg
    model_dir = os.path.join(cfg.out_dir, "model")
    # every process takes part: under FSDP this gathers the shards into one full state dict
    state_dict = acc.get_state_dict(run.model)
    sharded = acc.distributed_type == DistributedType.FSDP
    if acc.is_main_process:
        export(run.raw_model, cfg, model_dir, state_dict=state_dict)
        if cfg.sample_tokens and not sharded:  # a sharded model cannot generate on one process alone
            acc.print("sample:\n" + sample(run.raw_model, cfg.sample_tokens, acc.device))
        acc.print(f"model saved to {model_dir}")
    acc.wait_for_everyone()
    acc.end_training()  # last: it also tears down the process group
    return model_dir


def export(model, cfg, model_dir, state_dict=None):
    """The final folder: weights + tokenizer (from_pretrained / pipeline), metrics, loss curve, model card.

    Written through model_folder.write_folder: staged beside model_dir, fsynced, then
    swapped in, so a kill or a full disk leaves the previous model folder or the new one.
    """
    from .hub import write_model_card
    from .model_folder import check_finite, write_folder, write_model_files

    check_finite(state_dict.items() if state_dict is not None else model.state_dict().items(), "the trained model")

    def write(tmp):
        write_model_files(model, tmp, state_dict)  # already staged: one fsync + rename, by write_folder
        for name in ("metrics.jsonl", "run_config.json"):
            shutil.copy(os.path.join(cfg.out_dir, name), os.path.join(tmp, name))
        plot_losses(os.path.join(cfg.out_dir, "metrics.jsonl"), os.path.join(tmp, "loss.png"))
        write_model_card(tmp)

    write_folder(model_dir, write)
    try:
        shutil.copy(os.path.join(model_dir, "loss.png"), os.path.join(cfg.out_dir, "loss.png"))
    except OSError as e:
        raise disk_fault("loss.png", cfg.out_dir, e) from e


@torch.no_grad()
def sample(model, n_tokens, device):
    """A sample continuing a newline, to see what the model learned."""
    from .tokenizer import load_tiktoken

    enc = load_tiktoken()
    model.eval()
    ids = torch.tensor([enc.encode_ordinary("\n")], device=device)
    n = min(n_tokens, model.config.block_size - ids.shape[1])
    out = model.generate(ids, max_new_tokens=n, do_sample=True, temperature=0.8, top_k=200,
                         pad_token_id=enc.eot_token)
    return enc.decode(out[0, ids.shape[1]:].tolist())


# ---------------------------------------------------------------- helpers

def _tensorboard_if_installed():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return "tensorboard"


def _any_process(flag, accelerator):
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").item() > 0


def _block_hash(ids):
    import hashlib

    return hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest()[:16]


def _run(argv):
    return train(parse_config(argv))


def main(argv=None):
    return run_cli("train.py", _run, argv)
