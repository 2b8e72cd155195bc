"""The training loop on Accelerate: one CPU, one GPU, several processes or machines (DDP/FSDP).

`train()` reads top to bottom: setup (accelerator, data, model, optimizer, resume),
fit (the optimizer steps), evaluate, finish (export the model folder). The usual
Accelerate recipe (prepare, accumulate, clip, step), with:

* one global data order: epoch e is a permutation of the training blocks (seeded by
  seed and e); each micro-step the processes together take the next world x batch_size
  blocks, process r the r-th batch_size of them. The position in the epoch is counted
  in blocks for all processes together, so a run resumes exactly in data order on any
  number of processes, and bit-identical on the same number;
* a stop on a non-finite loss or gradient *before* the optimizer step that would write
  it into the weights: the newest checkpoint stays the newest finite one;
* a clean stop on SIGTERM/SIGINT: the step finishes, a checkpoint is written, exit 0.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import sys
from functools import lru_cache

import torch

from ..errors import CheckpointError, ConfigError, GptScratchError, ModelFolderError, run_cli
from ..folder.card import SETTINGS_FILE, SUMMARY_FILE, write_model_card
from ..folder.durable import environment_fault, remove_staging, staged_file, write_file
from ..folder.model_folder import save_model_folder
from ..tokenizer import EOT_ID, load_tiktoken, token_byte_lengths
from .checkpoints import TrainState, list_checkpoints, resolve_resume, save_checkpoint
from .config import TrainConfig, parse_config
from .data import load_blocks
from .launch import check_launch, check_model_fits, check_strategy, cpu_threads, describe_machine, resolve_precision
from .metrics import MetricsLog, Throughput, flops_per_token, matmul_peak, perplexity, plot_losses
from .optim import WeightAverage, lr_at, make_optimizer


class TrainingDiverged(GptScratchError):
    """The loss or the gradients became NaN/inf: the run stopped before they reached the weights."""

    exit_code = 1


# ---------------------------------------------------------------- the model

def load_pretrained(source, block_size, dropout):
    """The GPT to fine-tune from a gpt_scratch folder, a transformers GPT-2 folder or a Hub id, through the checked
    door every reader uses (model_folder.load_model); its context cropped to `block_size`, dropout the run's."""
    from ..folder.convert import from_hf_gpt2
    from ..folder.model_folder import load_model
    from ..modeling_gpt import GPTForCausalLM

    hint = ("pass a folder written by save_pretrained (a gpt_scratch model folder or a transformers GPT-2), or a Hub "
            "id such as openai-community/gpt2 with network access")
    if not os.path.isdir(source) and (os.path.exists(source) or source.startswith((".", "/")) or source.count("/") > 1):
        raise ConfigError(f"init_from {source!r} is not a folder; {hint}")
    try:
        if not os.path.isdir(source):  # a Hub id: fetched into huggingface_hub's cache, then the same checks
            from huggingface_hub import snapshot_download

            source = snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.py"])
        model = load_model(source)
    except ModelFolderError as e:
        raise ConfigError(f"init_from {source!r}: {e}") from None
    except Exception as e:  # no network, no such repo
        raise ConfigError(f"init_from {source!r}: cannot fetch it ({str(e).splitlines()[0]}); {hint}") from None
    model = from_hf_gpt2(model) if model.config.model_type == "gpt2" else model
    if not isinstance(model, GPTForCausalLM):
        raise ConfigError(f"init_from {source!r} is a {model.config.model_type!r} model; only GPT-2 and gpt_scratch "
                          "GPTs can be fine-tuned here")
    if block_size > model.config.block_size:
        raise ConfigError(f"block_size {block_size} is longer than init_from {source!r}'s context "
                          f"({model.config.block_size} positions); use --block_size {model.config.block_size} or less")
    config = copy.deepcopy(model.config)
    config.block_size, config.dropout = block_size, dropout
    new, sd = GPTForCausalLM(config), model.state_dict()
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size]
    new.load_state_dict(sd)
    return new.float().train()


def build_model(cfg):
    from transformers import AutoModelForCausalLM

    if cfg.init_from:
        return load_pretrained(cfg.init_from, cfg.block_size, cfg.dropout)
    return AutoModelForCausalLM.from_config(cfg.model_config())


def forward_kwargs(model):
    """gpt_scratch's GPT returns only the loss when told (skip_logits); other models get the plain call."""
    from ..modeling_gpt import GPTForCausalLM

    return {"skip_logits": True} if isinstance(model, GPTForCausalLM) else {}


def model_shape(model):
    c = model.config
    return {"model": "bigram" if c.model_type.endswith("bigram") else "gpt",
            **{k: getattr(c, k, None) for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")}}


# ---------------------------------------------------------------- the data order

@lru_cache(maxsize=2)
def epoch_order(n_blocks, seed, epoch):
    """The blocks of an epoch in training order: the same on every process, for any number of processes."""
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def next_indices(state, n_blocks, batch_size, world, rank, seed):
    """This process's blocks for the next micro-step; advances the global position (epoch, blocks consumed)."""
    if state.position + world * batch_size > n_blocks:
        state.epoch, state.position = state.epoch + 1, 0
    start = state.position + rank * batch_size
    state.position += world * batch_size
    return epoch_order(n_blocks, seed, state.epoch)[start:start + batch_size]


# ---------------------------------------------------------------- the run's parts

class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.requested = False
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, then saving a checkpoint", file=sys.stderr)

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass
class Run:
    """Everything setup() builds and the later stages use."""

    cfg: TrainConfig
    accelerator: object
    model: object  # prepared (DDP/FSDP-wrapped where that applies)
    raw_model: object  # the model itself: export, shape, sampling
    forward: object  # what the loop calls: the prepared model, compiled if asked
    optimizer: object
    train: object  # TokenBlocks
    val: object
    state: TrainState
    metrics: MetricsLog
    throughput: Throughput
    facts: dict  # what the model card says about the run: data, machine, strategy, precision
    train_kw: dict  # training steps only: the restricted vocabulary
    shared_out_dir: bool = True
    ema: WeightAverage = None  # the weights evaluated and exported, when ema_decay is set

    @property
    def world(self):
        return self.accelerator.num_processes

    def log(self, record):
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        self.metrics.append(record)

    def batch(self, indices):
        ids = torch.stack([self.train[i] for i in indices]).to(self.accelerator.device)
        if self.cfg.record_batches:
            path = os.path.join(self.cfg.out_dir, f"batches-rank{self.accelerator.process_index}.jsonl")
            start = self.state.position - self.world * self.cfg.batch_size  # this micro-step's first block
            with open(path, "a") as f:
                f.write(json.dumps({"step": self.state.step, "epoch": self.state.epoch, "position": start,
                                    "rank": self.accelerator.process_index, "blocks": indices}) + "\n")
        return ids

    def save(self):
        fixed = dict(model_shape(self.raw_model), optimizer=self.cfg.optimizer, vocab_restricted=bool(self.train_kw))
        save_checkpoint(self.accelerator, self.cfg.out_dir, self.state,
                        {"fixed": fixed, "config": dataclasses.asdict(self.cfg)}, self.cfg.keep_checkpoints)
        self.throughput.restart(self.state.tokens_seen)


def make_accelerator(cfg):
    """The Accelerator for cfg, after the launch, the strategy and the precision check out; (accelerator, cfg)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    use_cpu = cfg.cpu or not torch.cuda.is_available()
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_precision(cfg.mixed_precision, use_cpu))
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(f"out_dir {cfg.out_dir} is a file, not a folder; choose another --out_dir")
    accelerator = Accelerator(cpu=use_cpu,  # without cpu=True, CPU processes under torchrun each train alone
                              mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              log_with="tensorboard" if _installed("tensorboard") else None, project_dir=cfg.out_dir)
    check_launch(accelerator.num_processes)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg, accelerator.num_processes))
    set_seed(cfg.seed)
    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create out_dir {cfg.out_dir} ({e.strerror or e}); choose another --out_dir") from None
    if accelerator.is_local_main_process:
        remove_staging(cfg.out_dir)  # left by a save that never finished
    return accelerator, cfg


def out_dir_is_shared(accelerator, out_dir):
    """Whether every process sees the same out_dir (one file system), checked with a file the first one writes."""
    from accelerate.utils import broadcast_object_list

    if accelerator.num_processes == 1:
        return True
    name = broadcast_object_list([f".shared-check-{os.urandom(6).hex()}"])[0]
    if accelerator.is_main_process:
        open(os.path.join(out_dir, name), "w").close()
    accelerator.wait_for_everyone()
    seen = os.path.exists(os.path.join(out_dir, name))
    shared = not _any_process(not seen, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.unlink(os.path.join(out_dir, name))
    return shared


def restrict_vocabulary(cfg, model, train, accelerator):
    """train_vocab data: the loss over the ids the training split uses; the other embedding rows set to zero."""
    if not cfg.vocab_restricted:
        return {}
    ids = train.used_ids(model.config.vocab_size)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        keep = torch.zeros(weight.shape[0], dtype=torch.bool)
        keep[ids] = True
        weight[~keep] = 0  # no input and no gradient ever reaches these rows: they stay zero (a no-op on resume)
    accelerator.print(f"train_vocab: the loss covers the {len(ids):,} ids the training split uses (of "
                      f"{model.config.vocab_size:,}); the others' embeddings are held at zero")
    return {"loss_vocab_ids": ids.to(accelerator.device)}


def resume(cfg, accelerator, state, path, saved):
    """Load a checkpoint; on another number of processes, re-seed each process's RNG and say what that means."""
    from accelerate.utils import set_seed

    accelerator.load_state(path)
    say = accelerator.print
    if saved["world_size"] == accelerator.num_processes:
        say(f"resumed from {path} at step {state.step}")
        return
    set_seed(cfg.seed + 7919 * state.step + 104_729 * accelerator.process_index)
    say(f"resumed from {path} at step {state.step}, written by {saved['world_size']} process(es), now "
        f"{accelerator.num_processes}: model and optimizer carried over and the data order continues exactly (block "
        f"{state.position:,} of epoch {state.epoch}), but each process's random state is re-seeded from (seed, step, "
        "rank), so dropout differs from a run that never changed: not bit-identical")


def setup(cfg: TrainConfig) -> Run:
    """Accelerator, data, model, optimizer, resume: everything before the first step."""
    accelerator, cfg = make_accelerator(cfg)
    strategy = check_strategy(accelerator)
    shared = out_dir_is_shared(accelerator, cfg.out_dir)
    check_model_fits(cfg, accelerator.device.type)
    model = build_model(cfg)  # before the data: a pretrained source that cannot be right stops the run first
    with accelerator.local_main_process_first():  # each machine prepares its data once, in its own cache
        train, val, facts = load_blocks(cfg)
    if cfg.init_from:  # the shape is the pretrained model's: record it as this run's settings
        c = model.config
        cfg = dataclasses.replace(cfg, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, bias=c.bias)
        accelerator.print(f"init_from {cfg.init_from}: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
                          f"context {c.block_size}")
    train_kw = restrict_vocabulary(cfg, model, train, accelerator)
    fixed = dict(model_shape(model), optimizer=cfg.optimizer, vocab_restricted=bool(train_kw))
    path, saved = resolve_resume(cfg.resume, cfg.out_dir, cfg.max_steps, fixed, accelerator.print)
    if path and not shared:
        raise CheckpointError(f"cannot resume {path}: the processes do not see the same out_dir ({cfg.out_dir} is not "
                              "on a file system every machine shares), so the other machines cannot read the "
                              "checkpoint. Put out_dir on a shared file system (NFS, a cluster file system) and "
                              "resume from there")
    if len(train) < cfg.batch_size * accelerator.num_processes:
        raise ConfigError(f"the training split has {len(train)} blocks, fewer than one batch for all processes "
                          f"({cfg.batch_size} x {accelerator.num_processes}); lower batch_size or block_size, or use "
                          "more text")
    optimizer = make_optimizer(model, cfg, accelerator.device.type)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    state, ema = TrainState(), WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    for obj in (state, ema) if ema else (state,):
        accelerator.register_for_checkpointing(obj)
    if path:
        resume(cfg, accelerator, state, path, saved)
    return _finish_setup(cfg, accelerator, model, prepared, optimizer, train, val, state, train_kw,
                         dict(facts, strategy=strategy, shared=shared), ema)


def _finish_setup(cfg, accelerator, model, prepared, optimizer, train, val, state, train_kw, facts, ema):
    metrics = MetricsLog(cfg.out_dir, enabled=accelerator.is_main_process)
    metrics.keep_until(state.step)
    if accelerator.is_main_process:
        write_file(os.path.join(cfg.out_dir, SETTINGS_FILE), json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    accelerator.init_trackers("gpt_scratch", config={k: v for k, v in dataclasses.asdict(cfg).items() if v is not None})
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[accelerator.mixed_precision]
    peak, peak_now = matmul_peak(accelerator.device, dtype)  # MFU against the precision the run trains in
    world = accelerator.num_processes
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * world
    facts.update(hardware=describe_machine(accelerator.device), precision={"no": "fp32"}.get(
        accelerator.mixed_precision, f"{accelerator.mixed_precision} mixed precision"), init_from=cfg.init_from)
    accelerator.print(
        f"{cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters | {len(train)} train / "
        f"{len(val)} val blocks of {cfg.block_size} tokens | {facts['strategy']} (world size {world}) | "
        f"{facts['precision']} | {tokens_per_step} tokens/step | matmul peak {peak / 1e9:,.0f} GFLOP/s "
        f"{str(dtype).replace('torch.', '')}" + (f" (best seen here; {peak_now / 1e9:,.0f} now: the machine is busy)"
                                                  if peak_now < 0.9 * peak else ""))
    vocab = len(train_kw["loss_vocab_ids"]) if train_kw else None
    return Run(cfg=cfg, accelerator=accelerator, model=prepared, raw_model=model,
               forward=torch.compile(prepared) if cfg.compile else prepared, optimizer=optimizer, train=train, val=val,
               state=state, metrics=metrics, throughput=Throughput(flops_per_token(model, cfg.block_size, vocab), peak,
                                                                    world),
               facts=facts, train_kw=train_kw, shared_out_dir=facts.pop("shared"), ema=ema)


# ---------------------------------------------------------------- the run

def fit(run: Run) -> bool:
    """Optimizer steps up to max_steps, with logging, evaluations and checkpoints; True if stopped by a signal."""
    from tqdm.auto import tqdm

    cfg, acc, state = run.cfg, run.accelerator, run.state
    stop = StopFlag()
    bar = tqdm(total=cfg.max_steps, initial=state.step, disable=not acc.is_main_process, dynamic_ncols=True,
               desc="train")
    run.throughput.restart(state.tokens_seen)
    fwd_kw, losses = dict(forward_kwargs(run.raw_model), **run.train_kw), []
    try:
        while state.step < cfg.max_steps:
            lr = lr_at(state.step, cfg)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            run.forward.train()
            for micro in range(cfg.gradient_accumulation_steps):
                ids = run.batch(next_indices(state, len(run.train), cfg.batch_size, run.world, acc.process_index,
                                             cfg.seed))
                with acc.accumulate(run.model):
                    loss = run.forward(input_ids=ids, labels=ids, **fwd_kw).loss
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
                    _stop_if_not_finite(run, loss, grad_norm, micro)
                    run.optimizer.step()
                    run.optimizer.zero_grad(set_to_none=True)
                    if run.ema is not None and acc.sync_gradients:
                        run.ema.update(run.raw_model)
                losses.append(loss.detach())
            state.step += 1
            state.tokens_seen += cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * run.world
            bar.update(1)
            if state.step % cfg.log_interval == 0 or state.step == cfg.max_steps:
                train_loss = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
                tps, mfu = run.throughput.measure(state.tokens_seen)
                run.log({"step": state.step, "train_loss": train_loss, "lr": lr, "tokens_per_sec": tps, "mfu": mfu,
                         "tokens": state.tokens_seen, "world_size": run.world})
                bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
                losses = []
            if cfg.eval_interval and state.step % cfg.eval_interval == 0 and state.step < cfg.max_steps:
                figures = evaluate(run, cfg.eval_steps)
                run.log({"step": state.step, **figures})
                if acc.is_main_process:
                    bar.write(f"step {state.step}: val loss {figures['val_loss']:.4f}, {figures['val_bpb']:.4f} bits "
                              "per byte")
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
    kept = (f"the newest checkpoint, {done[-1]}, holds finite weights (resume it, or an earlier checkpoint-STEP if it "
            "diverges again)" if done else "no checkpoint was written before it")
    clip = f"--grad_clip 1.0 (now {cfg.grad_clip})" if cfg.grad_clip <= 0 else f"a smaller --grad_clip (now {cfg.grad_clip})"
    raise TrainingDiverged(f"non-finite {what} at step {step} (micro-batch {micro + 1}): stopped before the optimizer "
                           f"step, so no weight was changed by it; {kept}. Likely fix: lower --learning_rate (now "
                           f"{cfg.learning_rate}) or --warmup_steps longer (now {cfg.warmup_steps}), or {clip}")


@torch.no_grad()
def evaluate(run, max_batches):
    """Validation loss (nats per target token), bits per byte and perplexity over the first `max_batches` batches
    (0 = all), the batches shared out among the processes; special-token targets count in neither sum."""
    acc, cfg = run.accelerator, run.cfg
    if run.ema is not None:
        run.ema.swap(run.raw_model)  # the averaged weights are the ones measured (and exported)
    run.forward.eval()
    byte_len = token_byte_lengths().to(acc.device)
    n_batches = math.ceil(len(run.val) / cfg.batch_size)
    totals = torch.zeros(3, dtype=torch.float64, device=acc.device)  # nats, targets, bytes
    for b in range(acc.process_index, min(n_batches, max_batches or n_batches), run.world):
        ids = torch.stack([run.val[i] for i in range(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(run.val)))])
        ids = ids.to(acc.device)
        labels = ids.masked_fill(byte_len[ids] == 0, -100)
        loss = run.forward(input_ids=ids, labels=labels, **forward_kwargs(run.raw_model)).loss.double()
        targets, n_bytes = (labels[:, 1:] != -100).sum(), byte_len[labels[:, 1:].clamp(min=0)].sum()
        totals += torch.stack([loss * targets, targets.double(), n_bytes.double()])
    totals = acc.reduce(totals, reduction="sum")
    run.forward.train()
    if run.ema is not None:
        run.ema.swap(run.raw_model)
    nats = (totals[0] / totals[1]).item()
    return {"val_loss": nats, "val_bpb": (totals[0] / (math.log(2) * totals[2])).item(), "val_perplexity": perplexity(nats)}


def finish(run: Run, figures):
    """Export the model folder (every process takes part in gathering the weights), print a sample, close trackers."""
    from accelerate.utils import DistributedType

    acc, cfg = run.accelerator, run.cfg
    model_dir = os.path.join(cfg.out_dir, "model")
    if run.ema is not None:
        run.ema.swap(run.raw_model)  # the model exported is the average
    state_dict = acc.get_state_dict(run.model)  # under FSDP this gathers the shards into one full state dict
    if acc.is_main_process:
        summary = dict(run.facts, steps=run.state.step, tokens=run.state.tokens_seen, **figures)
        export(run.raw_model, cfg, model_dir, state_dict, summary)
        write_validation_text(run.val, os.path.join(cfg.out_dir, "validation.jsonl"))
        if cfg.sample_tokens and acc.distributed_type != DistributedType.FSDP:  # a shard cannot generate alone
            acc.print("sample:\n" + sample(run.raw_model, cfg.sample_tokens, acc.device))
        acc.print(f"model saved to {model_dir}" + ("" if run.shared_out_dir else " (on the first machine)"))
    # Release the DDP wrapper (its gloo group) while every process is still here, then the group itself: a process
    # that tore its group down after another had exited was seen to hang in the group's destructor.
    run.model = run.forward = run.optimizer = None
    acc.wait_for_everyone()
    acc.free_memory()
    acc.end_training()
    return model_dir


def export(model, cfg, model_dir, state_dict, summary):
    """The model folder: weights + tokenizer, the run's settings, summary and metrics, the loss plot and the card,
    published at once (a kill or a full disk leaves the previous folder or the new one)."""
    from ..input_checks import check_finite

    check_finite(state_dict.items() if state_dict is not None else model.state_dict().items(), "the trained model")
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")

    def extra(tmp):
        shutil.copy(os.path.join(cfg.out_dir, SETTINGS_FILE), tmp)
        shutil.copy(metrics_path, tmp)
        with open(os.path.join(tmp, SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        plot_losses(metrics_path, os.path.join(tmp, "loss.png"))
        write_model_card(tmp, where=os.path.abspath(model_dir))

    save_model_folder(model, model_dir, state_dict=state_dict, extra=extra)
    try:
        shutil.copy(os.path.join(model_dir, "loss.png"), os.path.join(cfg.out_dir, "loss.png"))
    except OSError as e:
        raise environment_fault(e, f"copying loss.png into {cfg.out_dir}") from e


def write_validation_text(val, path):
    """The validation blocks' text, one JSON line per document, for outside evaluators (lm-evaluation-harness):
    the same tokens val_loss and val_bpb are computed on, decoded. Streamed a block at a time (an incremental UTF-8
    decoder joins characters split between tokens), so memory does not grow with the split or a document's length."""
    enc, utf8 = load_tiktoken(), codecs.getincrementaldecoder("utf-8")("replace")
    pieces = (piece for i in range(len(val)) for piece in _split_documents(val[i].tolist()))
    with staged_file(path) as f:
        open_doc = False  # a line begun and not yet closed
        for ids, ends in itertools.chain(pieces, [([], True)]):  # the last document ends with the split
            text = utf8.decode(enc.decode_bytes(ids), final=ends)
            if text:
                f.write(("" if open_doc else '{"text": "') + json.dumps(text)[1:-1])
                open_doc = True
            if ends and open_doc:
                f.write('"}\n')
                open_doc = False


def _split_documents(ids):
    """(ids, ends a document?) pieces of a block, split at <|endoftext|> (which is dropped)."""
    start = 0
    for i, t in enumerate(ids):
        if t == EOT_ID:
            yield ids[start:i], True
            start = i + 1
    yield ids[start:], False


@torch.no_grad()
def sample(model, n_tokens, device):
    """A sample continuing a newline, to see what the model learned."""
    enc = load_tiktoken()
    model.eval()
    ids = torch.tensor([enc.encode_ordinary("\n")], device=device)
    out = model.generate(ids, max_new_tokens=min(n_tokens, model.config.block_size - 1), do_sample=True,
                         temperature=0.8, top_k=200, pad_token_id=enc.eot_token)
    return enc.decode(out[0, 1:].tolist())


def train(cfg: TrainConfig):
    """Train per `cfg`; returns the exported model folder (None when stopped by a signal)."""
    threads = torch.get_num_threads()
    try:  # setup() sizes torch's threads for training; an in-process caller gets its own back
        run = setup(cfg)
        if fit(run):
            return None
        figures = evaluate(run, run.cfg.eval_steps)
        run.log({"step": run.state.step, **figures})
        if not math.isfinite(figures["val_loss"]):
            raise TrainingDiverged(f"the final validation loss is {figures['val_loss']}: the model is not exported. "
                                   f"Lower --learning_rate (now {cfg.learning_rate}) and start again")
        run.accelerator.print(f"final val loss {figures['val_loss']:.4f} nats per token, {figures['val_bpb']:.4f} bits "
                              f"per byte (perplexity {figures['val_perplexity']:.1f})")
        return finish(run, figures)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers

def _installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _any_process(flag, accelerator):
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").item() > 0


def main(argv=None):
    """scripts/train.py: bad settings or data exit 2 with `train.py: error: ...`, the environment 1."""
    return run_cli("train.py", lambda: train(parse_config(argv)))
