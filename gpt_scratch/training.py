"""Training on Accelerate: one CPU, one GPU, several processes (DDP/FSDP).

`scripts/train.py` is a thin front over `main()`. The loop follows the usual
Accelerate recipe (prepare, accumulate, clip, step) with three things added:

* exact resume: the dataloader has its own generator and a seedable sampler, so
  iterating it never draws from the global RNG that dropout uses; checkpoints
  hold model, optimizer, every process's RNG, the step and the data position;
  a run stopped at N/2 and resumed in a new process ends bit-identical to an
  uninterrupted one (on CPU);
* safe checkpoints: written to a temporary folder and renamed when complete,
  older ones deleted only after that;
* a clean stop on SIGTERM/SIGINT: the current step finishes, a checkpoint is
  written, the process exits 0.

The learning rate is a pure function of the step (warmup, then cosine to
lr_decay_steps), set on the optimizer each step: nothing to save for it, and
no prepared scheduler stepping once per process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import typing
from dataclasses import dataclass, field

import torch

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
SHAPE_FIELDS = ("model", "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")


class ConfigError(ValueError):
    """A training setting is unknown, of the wrong type or out of range."""


class ResumeError(ValueError):
    """A checkpoint cannot be resumed: missing, incomplete, or of another model shape."""


@dataclass
class TrainConfig:
    """Every training setting. YAML (--config) overrides these, --key value overrides both."""

    # data and output
    data: str | None = field(default=None, metadata={"help": "text file, folder of .txt files or URL; empty = tiny Shakespeare (downloaded)"})
    out_dir: str = field(default="out/shakespeare", metadata={"help": "where checkpoints, metrics and the final model go"})
    val_fraction: float = field(default=0.1, metadata={"help": "last fraction of the tokens held out for validation"})
    cache_dir: str | None = field(default=None, metadata={"help": "tokenized-data cache; empty = ~/.cache/gpt_scratch/datasets"})
    # model
    model: str = field(default="gpt", metadata={"help": "gpt or bigram"})
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = True
    # optimisation
    batch_size: int = field(default=16, metadata={"help": "sequences per process per micro-step"})
    gradient_accumulation_steps: int = 1
    max_steps: int = field(default=1000, metadata={"help": "optimizer step at which this run stops"})
    lr_decay_steps: int | None = field(default=None, metadata={"help": "length of the cosine schedule; empty = max_steps"})
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 = no clipping"})
    # evaluation, logging, checkpoints
    eval_interval: int = field(default=100, metadata={"help": "steps between validation evaluations (0 = only at the end)"})
    eval_steps: int = field(default=20, metadata={"help": "validation batches per evaluation (0 = the whole split)"})
    log_interval: int = 10
    save_interval: int = field(default=500, metadata={"help": "steps between checkpoints (0 = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})
    resume: str | None = field(default=None, metadata={"help": "'auto' (newest checkpoint in out_dir, if any) or a checkpoint folder"})
    # hardware
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (fp16 needs a GPU)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU even if a GPU is there (automatic when there is none)"})
    cpu_threads: int = field(default=0, metadata={"help": "torch threads per process on CPU; 0 = cores / processes "
                                                         "(OMP_NUM_THREADS wins, except accelerate launch's default of 1)"})
    seed: int = 1337
    # end of run
    sample_tokens: int = field(default=200, metadata={"help": "tokens of sample text printed at the end (0 = none)"})
    record_batches: bool = field(default=False, metadata={"help": "debug: log a hash of every training block each process sees"})

    def __post_init__(self):
        if self.model not in ("gpt", "bigram"):
            raise ConfigError(f"model must be 'gpt' or 'bigram', got {self.model!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "gradient_accumulation_steps",
                     "max_steps", "log_interval", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "eval_steps", "save_interval", "sample_tokens", "cpu_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_decay_steps is not None and self.lr_decay_steps <= 0:
            raise ConfigError(f"lr_decay_steps must be positive, got {self.lr_decay_steps}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.learning_rate <= 0 or self.min_lr < 0 or self.min_lr > self.learning_rate:
            raise ConfigError(
                f"need 0 <= min_lr <= learning_rate and learning_rate > 0, got learning_rate={self.learning_rate}, "
                f"min_lr={self.min_lr}"
            )
        if self.model == "gpt" and self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def decay_steps(self):
        return self.lr_decay_steps or self.max_steps


# ---------------------------------------------------------------- settings: defaults < YAML < command line

def _field_type(f):
    """(base type, optional?) of a TrainConfig field."""
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    args = typing.get_args(t)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return t, False


def _convert(name, value, from_text):
    """Check/convert one setting; strings from the command line are parsed, YAML values must have the right type."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(name)
    if f is None:
        close = [k for k in (f.name for f in dataclasses.fields(TrainConfig)) if k.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown setting {name!r}{hint}; run scripts/train.py --help for the list")
    typ, optional = _field_type(f)
    if value is None or (from_text and optional and value in ("", "none", "None", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if from_text:
        try:
            if typ is bool:
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            return typ(value)
        except ValueError:
            raise ConfigError(f"{name} must be {typ.__name__}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)  # YAML writes 1e4 as a float
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {typ.__name__}, got {value!r} ({type(value).__name__})")
    return value


def build_parser():
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train gpt_scratch on a text corpus. Settings come from the defaults below, then --config "
        "YAML, then --key value on the command line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", metavar="YAML", help="YAML file of settings")
    for f in dataclasses.fields(TrainConfig):
        typ, _ = _field_type(f)
        p.add_argument(
            f"--{f.name}", metavar=typ.__name__.upper(), default=argparse.SUPPRESS,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )
    return p


def parse_config(argv=None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    values = {}
    path = args.pop("config", None)
    if path:
        import yaml

        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of setting: value")
        for k, v in loaded.items():
            values[k] = _convert(k, v, from_text=False)
    for k, v in args.items():
        values[k] = _convert(k, v, from_text=True)
    return TrainConfig(**values)


# ---------------------------------------------------------------- pieces of the loop

def lr_at(step, cfg: TrainConfig):
    """Learning rate for optimizer step `step` (0-based): linear warmup, cosine to min_lr at decay_steps."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if step >= cfg.decay_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def build_model(cfg: TrainConfig):
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


def model_shape(model) -> dict:
    c = model.config
    shape = {"model": "bigram" if c.model_type.endswith("bigram") else "gpt"}
    for k in SHAPE_FIELDS[1:]:
        shape[k] = getattr(c, k, None)
    return shape


def make_optimizer(model, cfg: TrainConfig, device_type):
    # weight decay on matrices (matmul weights, embeddings) only; not on biases or LayerNorm gains
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kw = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    try:
        # fused: one kernel for all parameters (≈3x faster step measured on CPU)
        return torch.optim.AdamW(groups, fused=device_type in ("cuda", "cpu"), **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kw)


def flops_per_token(model, block_size):
    """Training FLOPs per token, PaLM-style: 6 * params + attention (12 * layers * width * context)."""
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    attn = 12 * getattr(c, "n_layer", 0) * getattr(c, "n_embd", 0) * block_size if hasattr(c, "n_head") else 0
    return 6 * n + attn


def measure_matmul_peak(device, dtype, seconds=0.3, n=None):
    """FLOP/s of a large square matmul on this device: the denominator of MFU."""
    n = n or (4096 if device.type == "cuda" else 1024)
    # its own generator: drawing from the global RNG would shift dropout masks after a resume
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm up
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * count / (time.perf_counter() - t0)


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


def _check_bf16_is_fast(cfg):
    """bf16 on a CPU without bf16 instructions (AVX2 only) runs ~100x slower than fp32: refuse it up front."""
    if cfg.mixed_precision != "bf16":
        return
    peaks = {dt: measure_matmul_peak(torch.device("cpu"), dt, seconds=0.05, n=256)
             for dt in (torch.float32, torch.bfloat16)}
    if peaks[torch.bfloat16] < 0.5 * peaks[torch.float32]:
        raise ConfigError(
            f"mixed_precision bf16 is {peaks[torch.float32] / peaks[torch.bfloat16]:.0f}x slower than fp32 on this "
            f"CPU (no bf16 matrix instructions: {peaks[torch.bfloat16] / 1e9:.1f} vs "
            f"{peaks[torch.float32] / 1e9:.0f} GFLOP/s); use --mixed_precision no"
        )


def list_checkpoints(out_dir):
    """Complete checkpoints (renamed into place) in out_dir, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    found = []
    for name in os.listdir(out_dir):
        m = CHECKPOINT_RE.match(name)
        if m and os.path.isfile(os.path.join(out_dir, name, STATE_FILE)):
            found.append((int(m.group(1)), os.path.join(out_dir, name)))
    return [p for _, p in sorted(found)]


def check_checkpoint(path, world_size):
    """Raise a clear error unless `path` holds everything a resume needs."""
    if not os.path.isdir(path):
        raise ResumeError(f"checkpoint {path} does not exist; use --resume auto or a checkpoint-STEP folder")
    need = [STATE_FILE, "model.safetensors", "optimizer.bin"] + [f"random_states_{i}.pkl" for i in range(world_size)]
    missing = [f for f in need if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ResumeError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing)}); it cannot be resumed. "
            f"Pick another checkpoint-STEP folder or --resume auto"
        )
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


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


# ---------------------------------------------------------------- the run

def train(cfg: TrainConfig):
    """Train per `cfg`; returns the path of the exported model folder."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
    from torch.utils.data import DataLoader

    from .data import collate, prepare_datasets

    use_cpu = cfg.cpu or not torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and use_cpu:
        raise ConfigError("mixed_precision fp16 needs a GPU; use bf16 on CPU")
    log_with = None
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        pass
    accelerator = Accelerator(
        cpu=use_cpu,  # without cpu=True, CPU processes under torchrun each train alone
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=log_with,
        project_dir=cfg.out_dir,
    )
    world = accelerator.num_processes
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise RuntimeError(f"launched {launched} processes but Accelerate sees {world}; each would train alone")
    is_main = accelerator.is_main_process
    say = accelerator.print
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg, accelerator))
        _check_bf16_is_fast(cfg)
    set_seed(cfg.seed)

    os.makedirs(cfg.out_dir, exist_ok=True)
    resume_path = _resolve_resume(cfg, accelerator)

    datasets = prepare_datasets(cfg.data, cfg.block_size, cfg.val_fraction, cfg.cache_dir, accelerator=accelerator)
    train_ds, val_ds = datasets["train"], datasets["validation"]

    model = build_model(cfg)
    if resume_path:
        state = check_checkpoint(resume_path, world)
        _check_same_shape(state["model_shape"], model_shape(model), resume_path)
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
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    raw_model = accelerator.unwrap_model(model)
    fwd_model = torch.compile(model) if cfg.compile else model

    step, epoch, batch_in_epoch, tokens_seen = 0, 0, 0, 0
    if resume_path:
        accelerator.load_state(resume_path)
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        tokens_seen = state["tokens_seen"]
        say(f"resumed from {resume_path} at step {step}")
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if is_main:
        _truncate_metrics(metrics_path, step)
        with open(os.path.join(cfg.out_dir, "run_config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
    accelerator.init_trackers("gpt_scratch", config={k: v for k, v in dataclasses.asdict(cfg).items() if v is not None})

    n_params = sum(p.numel() for p in raw_model.parameters())
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * world
    peak = measure_matmul_peak(accelerator.device, torch.bfloat16 if cfg.mixed_precision != "no" else torch.float32)
    fpt = flops_per_token(raw_model, cfg.block_size)
    say(f"{cfg.model}: {n_params / 1e6:.2f}M parameters | {len(train_ds)} train / {len(val_ds)} val blocks of "
        f"{cfg.block_size} tokens | {world} process(es) on {accelerator.device} | {tokens_per_step} tokens/step")

    batches_path = os.path.join(cfg.out_dir, f"batches-rank{accelerator.process_index}.jsonl")
    batch_log = open(batches_path, "a") if cfg.record_batches else None

    def batch_stream():
        nonlocal epoch, batch_in_epoch
        while True:
            train_loader.set_epoch(epoch)
            loader = train_loader
            if batch_in_epoch:
                loader = accelerator.skip_first_batches(train_loader, batch_in_epoch)
                loader.set_epoch(epoch)  # its epoch counter restarts at 0
            for batch in loader:
                batch_in_epoch += 1
                yield batch
            epoch, batch_in_epoch = epoch + 1, 0

    def log(record):
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        if is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    stop = StopFlag()
    stop.install()
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not is_main, dynamic_ncols=True, desc="train")
    stream = batch_stream()
    first_record = step == 0
    val_loss = None
    t_last, tokens_last, losses = time.perf_counter(), tokens_seen, []
    try:
        while step < cfg.max_steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            fwd_model.train()
            for _ in range(cfg.gradient_accumulation_steps):
                batch = next(stream)
                if batch_log is not None:
                    batch_log.write(json.dumps([_block_hash(b) for b in batch["input_ids"]]) + "\n")
                with accelerator.accumulate(model):
                    loss = fwd_model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
            step += 1
            tokens_seen += tokens_per_step
            bar.update(1)

            if step % cfg.log_interval == 0 or step == cfg.max_steps:
                train_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
                dt = time.perf_counter() - t_last
                tps = (tokens_seen - tokens_last) / dt
                record = {"step": step, "train_loss": train_loss, "lr": lr, "tokens_per_sec": tps,
                          "mfu": tps * fpt / world / peak, "tokens": tokens_seen}
                if first_record:
                    record["world_size"] = world
                    first_record = False
                log(record)
                bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", mfu=f"{record['mfu']:.1%}")
                t_last, tokens_last, losses = time.perf_counter(), tokens_seen, []

            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < cfg.max_steps:
                val_loss = evaluate(fwd_model, val_loader, cfg.eval_steps, accelerator)
                log({"step": step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))})
                bar.write(f"step {step}: val loss {val_loss:.4f}") if is_main else None
                t_last = time.perf_counter()  # evaluation is not training throughput

            stopping = _any_process(stop.requested, accelerator)
            if step == cfg.max_steps or stopping or (cfg.save_interval and step % cfg.save_interval == 0):
                save_checkpoint(accelerator, cfg, step, epoch, batch_in_epoch, tokens_seen, model_shape(raw_model))
                t_last = time.perf_counter()
            if stopping:
                say(f"stopped at step {step}; checkpoint written. Continue with --resume auto")
                return None
    finally:
        bar.close()
        stop.restore()
        if batch_log is not None:
            batch_log.close()

    val_loss = evaluate(fwd_model, val_loader, cfg.eval_steps, accelerator)
    log({"step": step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))})
    say(f"final val loss {val_loss:.4f} (perplexity {math.exp(min(val_loss, 50)):.1f})")
    model_dir = os.path.join(cfg.out_dir, "model")
    # every process takes part: under FSDP this gathers the shards into one full state dict
    state_dict = accelerator.get_state_dict(model)
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if is_main:
        export(raw_model, cfg, model_dir, state_dict=state_dict)
        if cfg.sample_tokens and not sharded:  # a sharded model cannot generate on one process alone
            say("sample:\n" + sample(raw_model, cfg.sample_tokens, accelerator.device))
        say(f"model saved to {model_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it also tears down the process group
    return model_dir


@torch.no_grad()
def evaluate(model, loader, max_batches, accelerator):
    """Mean validation loss over the first `max_batches` batches (0 = all), across processes."""
    model.eval()
    total, count = torch.zeros((), device=accelerator.device), 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        total += model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.float()
        count += 1
    mean = accelerator.reduce(total / max(count, 1), reduction="mean")
    model.train()
    return mean.item()


def save_checkpoint(accelerator, cfg, step, epoch, batch_in_epoch, tokens_seen, shape):
    """Write OUT/checkpoint-STEP via a temporary folder; prune old ones only once it is complete."""
    final = os.path.join(cfg.out_dir, f"checkpoint-{step}")
    tmp = os.path.join(cfg.out_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "tokens_seen": tokens_seen,
                 "world_size": accelerator.num_processes, "model_shape": shape, "config": dataclasses.asdict(cfg)}
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state, f, indent=2)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):
            shutil.rmtree(final)  # same step saved again (e.g. a rerun): replace it
        os.replace(tmp, final)  # the rename is the moment the checkpoint becomes complete
        for old in list_checkpoints(cfg.out_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def export(model, cfg, model_dir, state_dict=None):
    """The final folder: weights + tokenizer (from_pretrained / pipeline), metrics, loss curve, model card."""
    from .export import save_model_folder

    tmp = model_dir + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    save_model_folder(model, tmp, state_dict=state_dict)
    for name in ("metrics.jsonl", "run_config.json"):
        shutil.copy(os.path.join(cfg.out_dir, name), os.path.join(tmp, name))
    plot_losses(os.path.join(cfg.out_dir, "metrics.jsonl"), os.path.join(tmp, "loss.png"))
    shutil.copy(os.path.join(tmp, "loss.png"), os.path.join(cfg.out_dir, "loss.png"))
    from .hub import write_model_card

    write_model_card(tmp)
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)


def plot_losses(metrics_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    with open(metrics_path) as f:
        for line in f:
            r = json.loads(line)
            if "train_loss" in r:
                train.append((r["step"], r["train_loss"]))
            if "val_loss" in r:
                val.append((r["step"], r["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


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

def _resolve_resume(cfg, accelerator):
    stale = [n for n in os.listdir(cfg.out_dir) if n.startswith(".tmp-checkpoint-")]
    if accelerator.is_main_process:
        for name in stale:  # left by a save that never finished
            shutil.rmtree(os.path.join(cfg.out_dir, name), ignore_errors=True)
    if not cfg.resume:
        existing = list_checkpoints(cfg.out_dir)
        if existing:
            # a fresh run would interleave its checkpoints with these and prune the wrong ones
            raise ResumeError(f"{cfg.out_dir} holds checkpoints of an earlier run (newest {existing[-1]}); "
                              "pass --resume auto to continue it, or choose another out_dir")
        return None
    if cfg.resume == "auto":
        existing = list_checkpoints(cfg.out_dir)
        if not existing:
            accelerator.print(f"--resume auto: no checkpoint in {cfg.out_dir}, starting fresh")
            return None
        return existing[-1]
    return cfg.resume


def _check_same_shape(saved, current, path):
    diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
    if diff:
        fields = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"cannot resume {path}: the model shape differs ({fields}); "
                         "use the checkpoint's settings or start a new out_dir")


def _truncate_metrics(path, step):
    """Drop records past `step` (written after the checkpoint we resume from), so the log matches the run."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(keep)


def _any_process(flag, accelerator):
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").item() > 0


def _block_hash(ids):
    import hashlib

    return hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest()[:16]


def main(argv=None):
    try:
        cfg = parse_config(argv)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2)
    from .data import DataError

    try:
        train(cfg)
    except (ConfigError, DataError, ResumeError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2)
