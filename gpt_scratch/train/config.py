"""Training settings: the TrainConfig dataclass and how it is read (defaults < YAML < command line).

Every field is a setting; `scripts/train.py --help` lists them with their defaults.
A YAML file (--config) holds `setting: value` pairs of the field's type; on the
command line `--setting value` is parsed from text. Each setting is checked once,
here, when the config is made; the model's shape is checked by the model's own
config class (GPTConfig / BigramConfig), built here too, so a bad shape is refused
before any data is read. Errors are ConfigErrors naming the setting and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from ..errors import ConfigError


def _h(text, default=None):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Every training setting. YAML (--config) overrides these, --key value overrides both."""

    # data and output
    data: str | None = _h("text file, folder of .txt files or URL; empty = tiny Shakespeare (downloaded once)")
    dataset: str | None = _h("instead of --data: anything datasets.load_dataset reads (a Hub name, parquet/json/csv/"
                             "text/arrow files or a folder of them, a save_to_disk folder)")
    dataset_config: str | None = _h("the --dataset's configuration name (Hub datasets with several)")
    dataset_split: str = _h("the --dataset's split to read; validation is its last val_fraction", "train")
    text_column: str = _h("the --dataset's column holding the text", "text")
    num_proc: int = _h("processes tokenizing the data; 0 = one per core", 0)
    out_dir: str = _h("where checkpoints, metrics and the final model go", "out/shakespeare")
    val_fraction: float = _h("last fraction of the tokens held out for validation", 0.1)
    cache_dir: str | None = _h("tokenized-data cache; empty = ~/.cache/gpt_scratch/datasets")
    # model
    model: str = _h("gpt or bigram", "gpt")
    init_from: str | None = _h("start from pretrained weights: a gpt_scratch model folder, a transformers GPT-2 folder "
                               "or a Hub id (openai-community/gpt2); the shape settings then come from it, block_size "
                               "may crop its context")
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = True
    # optimisation
    batch_size: int = _h("sequences per process per micro-step", 16)
    gradient_accumulation_steps: int = 1
    max_steps: int = _h("optimizer step at which this run stops", 1000)
    lr_decay_steps: int | None = _h("length of the schedule; empty = max_steps")
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = _h("max gradient norm; 0 = no clipping", 1.0)
    optimizer: str = _h("adamw, or muon (Muon on the hidden matrices, AdamW on embeddings, norms and biases)", "adamw")
    lr_schedule: str = _h("cosine (warm-up, cosine to min_lr) or wsd (warm-up, stable, linear decay over the last "
                          "cooldown_fraction)", "cosine")
    cooldown_fraction: float = _h("wsd: fraction of the steps spent decaying to min_lr", 0.2)
    ema_decay: float = _h("an exponential moving average of the weights, with this decay (e.g. 0.99), is evaluated and "
                          "exported instead of the last weights; 0 = off", 0.0)
    train_vocab: str = _h("auto, full or data: with data the loss computes logits only for the ids the training split "
                          "uses, the others' embeddings held at zero (the same full-vocabulary loss, less work; the "
                          "saved model is a full GPT-2); auto = data for a GPT trained from scratch, else full", "auto")
    # evaluation, logging, checkpoints
    eval_interval: int = _h("steps between validation evaluations (0 = only at the end)", 100)
    eval_steps: int = _h("validation batches per evaluation (0 = the whole split)", 20)
    log_interval: int = 10
    save_interval: int = _h("steps between checkpoints (0 = only at the end)", 500)
    keep_checkpoints: int = _h("newest checkpoints kept", 2)
    resume: str | None = _h("'auto' (newest checkpoint in out_dir, if any) or a checkpoint folder")
    # hardware
    mixed_precision: str = _h("no, bf16, fp16 (fp16 needs a GPU) or auto (bf16 on a GPU with bf16 or a CPU with bf16 "
                              "matrix instructions, else no)", "no")
    compile: bool = _h("torch.compile the model", False)
    cpu: bool = _h("train on CPU even if a GPU is there (automatic when there is none)", False)
    cpu_threads: int = _h("torch threads per process on CPU; 0 = cores / processes on this machine (OMP_NUM_THREADS "
                          "wins, except accelerate launch's default of 1)", 0)
    seed: int = 1337
    # end of run
    sample_tokens: int = _h("tokens of sample text printed at the end (0 = none)", 200)
    record_batches: bool = _h("debug: write the training blocks each process takes, step by step, to "
                              "out_dir/batches-rankN.jsonl", False)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # the type of every value, as a YAML file's values are checked
            v = convert_setting(f.name, getattr(self, f.name), from_text=False)
            setattr(self, f.name, v)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{f.name} must be a finite number, got {v}")
        for name, allowed in (("model", ("gpt", "bigram")), ("mixed_precision", ("no", "bf16", "fp16", "auto")),
                              ("optimizer", ("adamw", "muon")), ("lr_schedule", ("cosine", "wsd")),
                              ("train_vocab", ("auto", "full", "data"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for names, ok, rule in (
            (("batch_size", "gradient_accumulation_steps", "max_steps", "log_interval", "keep_checkpoints"),
             lambda v: v > 0, "positive"),
            (("warmup_steps", "eval_interval", "eval_steps", "save_interval", "sample_tokens", "cpu_threads",
              "num_proc", "grad_clip", "weight_decay", "min_lr"), lambda v: v >= 0, ">= 0"),
            (("lr_decay_steps",), lambda v: v is None or v > 0, "positive (or empty: max_steps)"),
            (("learning_rate",), lambda v: v > 0, "positive"),
            (("dropout", "beta1", "beta2", "ema_decay"), lambda v: 0 <= v < 1, "in [0, 1)"),
            (("val_fraction",), lambda v: 0 < v < 1, "in (0, 1)"),
            (("cooldown_fraction",), lambda v: 0 < v <= 1, "in (0, 1]"),
            (("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
        ):
            for name in names:
                if not ok(getattr(self, name)):
                    raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)}")
        self._check_combinations()
        try:
            self.model_config()  # the model's own config class checks the shape
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _check_combinations(self):
        conflicts = (
            (self.min_lr > self.learning_rate,
             f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})"),
            (self.data is not None and self.dataset is not None,
             "give either --data (a text file, folder or URL) or --dataset (for datasets.load_dataset), not both"),
            (self.init_from is not None and self.model != "gpt",
             f"init_from loads a GPT; it cannot start a {self.model!r} model (drop --init_from or use --model gpt)"),
            (self.train_vocab == "data" and (self.init_from or self.model != "gpt"),
             "train_vocab data zeroes the embeddings of unused ids: it is for a GPT trained from scratch, not with "
             "--init_from or the bigram; use --train_vocab full (or auto)"),
            (self.optimizer == "muon" and self.model == "bigram",
             "optimizer muon trains hidden 2-D matrices and the bigram has none (only its embedding and head); use "
             "--optimizer adamw"),
            (self.dataset is None and self.dataset_split != "train",
             "dataset_split picks a split of a --dataset; with --data the validation split is the last val_fraction "
             "of the text. Drop --dataset_split or use --dataset"),
        )
        for bad, message in conflicts:
            if bad:
                raise ConfigError(message)

    @property
    def decay_steps(self):
        return self.lr_decay_steps or self.max_steps

    @property
    def vocab_restricted(self):
        """Whether the loss is restricted to the training data's ids (train_vocab data, or auto on a fresh GPT)."""
        return self.train_vocab == "data" or (self.train_vocab == "auto" and self.model == "gpt" and not self.init_from)

    def model_config(self):
        """The model's config for these settings (a fresh model; --init_from takes its shape from the weights)."""
        from ..configuration_bigram import BigramConfig
        from ..configuration_gpt import GPTConfig

        if self.model == "bigram":
            return BigramConfig(n_embd=self.n_embd, block_size=self.block_size)
        return GPTConfig(n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, block_size=self.block_size,
                         dropout=self.dropout, bias=self.bias)


def _field_type(name):
    """(base type, optional?) of a TrainConfig field."""
    t = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(t)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return t, False


def convert_setting(name, value, from_text):
    """Check/convert one setting: text from the command line is parsed, YAML values must have the right type."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if name not in names:
        close = [k for k in names if k.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown setting {name!r}{hint}; run scripts/train.py --help for the list")
    typ, optional = _field_type(name)
    if value is None or (from_text and optional and value in ("", "none", "None", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if from_text:
        if typ is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{name} must be bool, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        try:
            return typ(value)
        except ValueError:
            raise ConfigError(f"{name} must be {typ.__name__}, got {value!r}") from None
    if typ is float and type(value) is int:
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)  # YAML writes 1e4 as a float
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {typ.__name__}, got {value!r} ({type(value).__name__})")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="train.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Train gpt_scratch on a text corpus. Settings come from the defaults "
                                "below, then --config YAML, then --key value on the command line.")
    p.add_argument("--config", metavar="YAML", help="YAML file of settings")
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name}", metavar=_field_type(f.name)[0].__name__.upper(), default=argparse.SUPPRESS,
                       help=f"{f.metadata.get('help', '')} (default: {f.default})")
    return p


def _read_yaml(path):
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{at} ({problem}); fix the line (settings are "
                          "`name: value`, one a line)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path} ({e}); pass a readable UTF-8 YAML file") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value")
    return loaded


def parse_config(argv=None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config", None)
    values = {k: convert_setting(k, v, from_text=False) for k, v in (_read_yaml(path) if path else {}).items()}
    values.update({k: convert_setting(k, v, from_text=True) for k, v in args.items()})
    return TrainConfig(**values)
