"""Checkpoints any Accelerate strategy can resume, judged by a marker of the project's own.

A checkpoint is OUT/checkpoint-STEP, written like this:

1. `accelerator.save_state` into the staging folder OUT/.checkpoint-STEP.partial-save,
   whatever layout the strategy uses (`model.safetensors` + `optimizer.bin` for one
   process or DDP, `pytorch_model_fsdp_0/` + `optimizer_0/` shards under FSDP, one
   `random_states_RANK.pkl` per process, `custom_checkpoint_0.pkl` for the TrainState);
2. `trainer_state.json`: step, data position, world size, model shape and settings,
   readable before anything is loaded;
3. `checkpoint_complete.json` last: the size and sha256 of every file; then the folder
   is fsynced and renamed into place (durable.publish_folder).

Complete means "has the marker and every file it lists, with that size and digest". A
kill or a full disk before step 3 leaves no checkpoint; a file damaged later fails its
digest and is named. The data position is global (blocks of the epoch consumed by all
processes together), so a checkpoint resumes on any number of processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

from ..errors import CheckpointError, ConfigError
from ..folder.durable import environment_fault, file_sha256, publish_folder, staging_path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE, COMPLETE_FILE = "trainer_state.json", "checkpoint_complete.json"
# settings a resumed run cannot change without becoming another run
FIXED_ON_RESUME = ("optimizer", "model", "n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_restricted")


class TrainState:
    """What a resume needs beyond model, optimizer and RNG; registered with accelerator.register_for_checkpointing."""

    FIELDS = ("step", "epoch", "position", "tokens_seen")

    def __init__(self):
        self.step = self.epoch = self.position = self.tokens_seen = 0

    def state_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def load_state_dict(self, state):
        for k in self.FIELDS:
            setattr(self, k, int(state[k]))


def manifest(root):
    """{relative path: {"size", "sha256"}} of every file under root but the marker."""
    return {rel: {"size": os.path.getsize(full), "sha256": file_sha256(full)}
            for dirpath, _, files in os.walk(root) for name in sorted(files)
            for full in [os.path.join(dirpath, name)] for rel in [os.path.relpath(full, root)] if rel != COMPLETE_FILE}


def list_checkpoints(out_dir):
    """Checkpoints in out_dir that carry the marker, oldest first (their contents are checked on resume)."""
    if not os.path.isdir(out_dir):
        return []
    found = [(int(m.group(1)), os.path.join(out_dir, n)) for n in os.listdir(out_dir)
             for m in [CHECKPOINT_RE.match(n)] if m and os.path.isfile(os.path.join(out_dir, n, COMPLETE_FILE))]
    return [p for _, p in sorted(found)]


def check_checkpoint(path):
    """The checkpoint's trainer state, after checking every file its marker lists; CheckpointError otherwise."""
    path = os.fspath(path)
    again = "Pick another checkpoint-STEP folder or --resume auto"
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} does not exist; use --resume auto or a checkpoint-STEP folder")
    marker = os.path.join(path, COMPLETE_FILE)
    if not os.path.isfile(marker):
        raise CheckpointError(f"checkpoint {path} is incomplete (no {COMPLETE_FILE}: its save never finished); it "
                              f"cannot be resumed. {again}")
    try:
        with open(marker, encoding="utf-8") as f:
            files = json.load(f)["files"]
        for rel, want in files.items():
            full = os.path.join(path, rel)
            if not os.path.isfile(full):
                raise CheckpointError(f"checkpoint {path} is incomplete (missing {rel}); it cannot be resumed. {again}")
            if os.path.getsize(full) != want["size"] or file_sha256(full) != want["sha256"]:
                raise CheckpointError(f"checkpoint {path}: {rel} is corrupt ({os.path.getsize(full)} bytes, saved as "
                                      f"{want['size']}; its sha256 no longer matches), so the resumed run would not be "
                                      f"the same run. {again}")
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: its marker or {STATE_FILE} is unreadable ({e}). {again}") from None


def check_same_run(state, fixed, path):
    """Refuse a resume whose model shape or optimizer differs from the checkpoint's."""
    saved = state.get("fixed", {})
    diff = [f"{k}: checkpoint {saved.get(k)} vs now {v}" for k, v in fixed.items() if saved.get(k, v) != v]
    if diff:
        raise CheckpointError(f"cannot resume {path}: {', '.join(diff)}. A resumed run keeps the model shape and the "
                              "optimizer of its checkpoint: use the checkpoint's settings, or start a new out_dir")


def resolve_resume(resume, out_dir, max_steps, fixed, say):
    """(checkpoint path or None, its trainer state) for --resume; `auto` falls back past damaged ones, saying so."""
    if not resume:
        existing = list_checkpoints(out_dir)
        if existing:  # a fresh run would interleave its checkpoints with these and prune the wrong ones
            raise CheckpointError(f"{out_dir} holds checkpoints of an earlier run (newest {existing[-1]}); pass "
                                  "--resume auto to continue it, or choose another out_dir")
        return None, None
    candidates = list_checkpoints(out_dir)[::-1] if resume == "auto" else [resume]
    if not candidates:
        say(f"--resume auto: no checkpoint in {out_dir}, starting fresh")
        return None, None
    for i, path in enumerate(candidates):
        try:
            state = check_checkpoint(path)
            check_same_run(state, fixed, path)
        except CheckpointError as e:
            if i + 1 == len(candidates):
                raise
            say(f"--resume auto: {e}\n--resume auto: falling back to the previous checkpoint, {candidates[i + 1]}")
            continue
        if state["step"] > max_steps:
            raise ConfigError(f"{path} is at step {state['step']}, past max_steps {max_steps}: resuming would export a "
                              f"model trained for {state['step']} steps. Raise --max_steps to continue it, or resume "
                              "an earlier checkpoint")
        return path, state


def save_checkpoint(accelerator, out_dir, train_state, info, keep):
    """Write OUT/checkpoint-STEP (see the module docstring); prune older ones only once it is published."""
    final = os.path.join(out_dir, f"checkpoint-{train_state.step}")
    tmp = staging_path(final, "save")  # one name every process agrees on
    main = accelerator.is_main_process
    if main and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    quiet = logging.getLogger("accelerate.utils.other")  # "Removed shared tensor": the tied head, stored once
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        accelerator.save_state(tmp)
        if main:
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(dict(train_state.state_dict(), world_size=accelerator.num_processes, **info), f, indent=2)
        accelerator.wait_for_everyone()  # every process's files (random_states_RANK.pkl, shards) are in
        if main:
            with open(os.path.join(tmp, COMPLETE_FILE), "w", encoding="utf-8") as f:
                json.dump({"step": train_state.step, "files": manifest(tmp)}, f, indent=1)
            publish_folder(tmp, final)  # fsyncs every file, then the rename publishes it
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError(basic_ios::clear)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise environment_fault(e, f"writing checkpoint-{train_state.step} in {out_dir}", out_dir) from e
    finally:
        quiet.setLevel(level)
    if main:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process and os.path.exists(tmp):  # a machine that does not share out_dir
        shutil.rmtree(tmp, ignore_errors=True)
    return final
