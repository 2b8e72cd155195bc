"""Training settings: the TrainConfig dataclass and how it is read (defaults < YAML < command line).

Every field is a setting; `scripts/train.py --help` lists them with their defaults.
A YAML file (--config) holds `setting: value` pairs with the field's type; on the
command line `--setting value` is parsed from text. Unknown names, wrong types and
out-of-range values are ConfigErrors that name the setting and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from .errors import ConfigError
from .optim import lr_at  # noqa: F401  (the schedule; re-exported for older imports)

@dataclass
class TrainConfig:
    """Every training setting. YAML (--config) overrides these, --key value overrides both."""

    # data and output
    data: str | None = field(default=None, metadata={"help": "text file, folder of .txt files or URL; empty = tiny Shakespeare (downloaded)"})
    dataset: str | None = field(default=None, metadata={"help": "instead of --data: anything datasets.load_dataset reads (a Hub "
                                                         "name, parquet/json/csv/text/arrow files or a folder of them, a save_to_disk folder)"})
    dataset_config: str | None = field(default=None, metadata={"help": "the --dataset's configuration name (Hub datasets with several)"})
    dataset_split: str = field(default="train", metadata={"help": "the --dataset's split to read; validation is its last val_fraction"})
    text_column: str = field(default="text", metadata={"help": "the --dataset's column holding the text"})
    num_proc: int = field(default=0, metadata={"help": "processes tokenizing a --dataset; 0 = one per core"})
    out_dir: str = field(default="out/shakespeare", metadata={"help": "where checkpoints, metrics and the final model go"})
    val_fraction: float = field(default=0.1, metadata={"help": "last fraction of the tokens held out for validation"})
    cache_dir: str | None = field(default=None, metadata={"help": "tokenized-data cache; empty = ~/.cache/gpt_scratch/datasets"})
    # model
    model: str = field(default="gpt", metadata={"help": "gpt or bigram"})
    init_from: str | None = field(default=None, metadata={"help": "start from pretrained weights: a gpt_scratch model folder, a "
                                                           "transformers GPT-2 folder or a Hub id (openai-community/gpt2); the "
                                                           "shape settings then come from it, block_size may crop its context"})
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
    optimizer: str = field(default="adamw", metadata={"help": "adamw, or muon (Muon on the hidden matrices, AdamW on "
                                                       "embeddings, norms and biases)"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine (warm-up, cosine to min_lr) or wsd (warm-up, "
                                                          "stable, linear decay over the last cooldown_fraction)"})
    cooldown_fraction: float = field(default=0.2, metadata={"help": "wsd: fraction of the steps spent decaying to min_lr"})
    train_vocab: str = field(default="full", metadata={"help": "full, or data: the loss only computes logits for the "
                                                        "ids the training split uses, the others' embeddings held at "
                                                        "zero (same full-vocabulary loss, less work; saved model is "
                                                        "full GPT-2)"})
    # evaluation, logging, checkpoints
    eval_interval: int = field(default=100, metadata={"help": "steps between validation evaluations (0 = only at the end)"})
    eval_steps: int = field(default=20, metadata={"help": "validation batches per evaluation (0 = the whole split)"})
    log_interval: int = 10
    save_interval: int = field(default=500, metadata={"help": "steps between checkpoints (0 = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})
    resume: str | None = field(default=None, metadata={"help": "'auto' (newest checkpoint in out_dir, if any) or a checkpoint folder"})
    # hardware
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16, fp16 (fp16 needs a GPU) or auto (bf16 on "
                                                             "a GPU with bf16 or a CPU with fast bf16 matmuls, else no)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU even if a GPU is there (automatic when there is none)"})
    cpu_threads: int = field(default=0, metadata={"help": "torch threads per process on CPU; 0 = cores / processes "
                                                         "(OMP_NUM_THREADS wins, except accelerate launch's default of 1)"})
    seed: int = 1337
    # end of run
    sample_tokens: int = field(default=200, metadata={"help": "tokens of sample text printed at the end (0 = none)"})
    record_batches: bool = field(default=False, metadata={"help": "debug: log a hash of every training block each process sees"})

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{f.name} must be a finite number, got {v}")
        if self.model not in ("gpt", "bigram"):
            raise ConfigError(f"model must be 'gpt' or 'bigram', got {self.model!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16", "auto"):
            raise ConfigError(f"mixed_precision must be 'no', 'bf16', 'fp16' or 'auto', got {self.mixed_precision!r}")
        for name, allowed in (("optimizer", ("adamw", "muon")), ("lr_schedule", ("cosine", "wsd")),
                              ("train_vocab", ("full", "data"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0 < self.cooldown_fraction <= 1:
            raise ConfigError(f"cooldown_fraction must be in (0, 1], got {self.cooldown_fraction}")
        if self.train_vocab == "data" and (self.init_from or self.model != "gpt"):
            raise ConfigError("train_vocab data zeroes the embeddings of unused ids: it is for a GPT trained from "
                              "scratch, not with --init_from or the bigram; use --train_vocab full")
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
        if self.data is not None and self.dataset is not None:
            raise ConfigError("give either --data (a text file, folder or URL) or --dataset (for datasets.load_dataset), not both")
        if self.init_from is not None and self.model != "gpt":
            raise ConfigError(f"init_from loads a GPT; it cannot start a {self.model!r} model (drop --init_from or use --model gpt)")
        if self.num_proc < 0:
            raise ConfigError(f"num_proc must be >= 0, got {self.num_proc}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 = no clipping), got {self.grad_clip}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.dataset is None and self.dataset_split != "train":
            raise ConfigError("dataset_split picks a split of a --dataset; with --data the validation split is the "
                              "last val_fraction of the text. Drop --dataset_split or use --dataset")
        if self.model == "gpt" and self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def decay_steps(self):
        return self.lr_decay_steps or self.max_steps



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
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{at} ({problem}); fix the line "
                              "(settings are `name: value`, one a line)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {path} ({e}); pass a readable UTF-8 YAML file") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of setting: value")
        for k, v in loaded.items():
            values[k] = _convert(k, v, from_text=False)
    for k, v in args.items():
        values[k] = _convert(k, v, from_text=True)
    return TrainConfig(**values)
