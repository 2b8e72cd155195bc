"""Checkpoints any Accelerate strategy can resume: a project-written marker, not Accelerate's file names.

A checkpoint is OUT/checkpoint-STEP, written like this:

1. `accelerator.save_state` into OUT/.tmp-checkpoint-STEP (whatever layout the
   strategy uses: `model.safetensors` + `optimizer.bin` for one process or DDP,
   `pytorch_model_fsdp_0/` + `optimizer_0/` shards under FSDP, one
   `random_states_RANK.pkl` per process, `custom_checkpoint_0.pkl` for the
   registered TrainState);
2. `trainer_state.json` (step, data position, model shape, settings: readable
   before anything is loaded);
3. every file fsynced, then `checkpoint_complete.json` LAST: the size and sha256
   of every file in the folder, fsynced, and the folder renamed into place.

Complete means "has the marker and every file it lists, with that size and
digest". A kill or a full disk before step 3 leaves no marker; a file damaged
later (a truncated copy, a corrupt random_states pickle, which Accelerate's
load_state would skip without a word) fails its digest, and the error names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

from .errors import CheckpointError, ConfigError, EnvironmentFault

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
COMPLETE_FILE = "checkpoint_complete.json"
TMP_PREFIX = ".tmp-checkpoint-"


class TrainState:
    """What a resume needs beyond model/optimizer/RNG: registered with accelerator.register_for_checkpointing."""

    FIELDS = ("step", "epoch", "batch_in_epoch", "tokens_seen")

    def __init__(self, step=0, epoch=0, batch_in_epoch=0, tokens_seen=0):
        self.step, self.epoch, self.batch_in_epoch, self.tokens_seen = step, epoch, batch_in_epoch, tokens_seen

    def state_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def load_state_dict(self, state):
        for k in self.FIELDS:
            setattr(self, k, int(state[k]))

    def __repr__(self):
        return f"TrainState({', '.join(f'{k}={getattr(self, k)}' for k in self.FIELDS)})"


# ---------------------------------------------------------------- durable files

def fsync_dir(path):
    """fsync a folder's entry list, so a rename or a new file in it survives a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file and folder under root (before the rename that publishes it)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(root):
    """{relative path: {"size", "sha256"}} of every file under root except the marker itself."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel != COMPLETE_FILE:
                out[rel] = {"size": os.path.getsize(full), "sha256": _sha256(full)}
    return out


def disk_fault(what, path, err):
    """An EnvironmentFault for a failed write that names disk space (the usual cause) and what is free."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free
        room = f"{free / 2**20:,.1f} MiB free there"
    except OSError:
        room = "free space unknown"
    return EnvironmentFault(f"writing {what} to {path} failed ({err}); {room}: free disk space (or choose an "
                            f"out_dir on a larger disk) and rerun")


# ---------------------------------------------------------------- finding and checking

def list_checkpoints(out_dir):
    """Checkpoints in out_dir that carry the completion marker, oldest first (contents not verified here)."""
    if not os.path.isdir(out_dir):
        return []
    found = []
    for name in os.listdir(out_dir):
        m = CHECKPOINT_RE.match(name)
        if m and os.path.isfile(os.path.join(out_dir, name, COMPLETE_FILE)):
            found.append((int(m.group(1)), os.path.join(out_dir, name)))
    return [p for _, p in sorted(found)]


def check_checkpoint(path, world_size=None):
    """The checkpoint's trainer state, after checking every file its marker lists; CheckpointError otherwise."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} does not exist; use --resume auto or a checkpoint-STEP folder")
    marker = os.path.join(path, COMPLETE_FILE)
    if not os.path.isfile(marker):
        raise CheckpointError(
            f"checkpoint {path} is incomplete (no {COMPLETE_FILE}: its save never finished, or an older "
            "gpt_scratch wrote it); it cannot be resumed. Pick another checkpoint-STEP folder or --resume auto")
    try:
        with open(marker, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {COMPLETE_FILE} is unreadable ({e}); pick another checkpoint") from None
    for rel, want in files.items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            raise CheckpointError(f"checkpoint {path} is incomplete (missing {rel}); it cannot be resumed. "
                                  "Pick another checkpoint-STEP folder or --resume auto")
        size = os.path.getsize(full)
        if size != want["size"] or _sha256(full) != want["sha256"]:
            raise CheckpointError(
                f"checkpoint {path}: {rel} is corrupt ({size} bytes, saved as {want['size']}; its sha256 no longer "
                "matches), so the resumed run would not be the same run. Pick another checkpoint or --resume auto")
    try:
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} is unreadable ({e})") from None
    if world_size is not None and state.get("world_size") != world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {state.get('world_size')} process(es), this run has {world_size}: "
            f"the data position and RNG states are per process. Resume with {state.get('world_size')} process(es)")
    return state


def check_same_shape(saved, current, path):
    diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
    if diff:
        fields = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
        raise CheckpointError(f"cannot resume {path}: the model shape differs ({fields}); "
                              "use the checkpoint's settings or start a new out_dir")


def remove_stale_temporaries(out_dir):
    """Delete .tmp-checkpoint-* folders a save that never finished left behind."""
    for name in os.listdir(out_dir):
        if name.startswith(TMP_PREFIX):
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def resolve_resume(resume, out_dir, world_size, max_steps, shape, say):
    """(checkpoint path or None, its trainer state) for the --resume setting; refuses what cannot be resumed.

    `auto` takes the newest checkpoint that checks out, and says so when it has to
    fall back past a damaged one.
    """
    if not resume:
        existing = list_checkpoints(out_dir)
        if existing:
            # a fresh run would interleave its checkpoints with these and prune the wrong ones
            raise CheckpointError(f"{out_dir} holds checkpoints of an earlier run (newest {existing[-1]}); "
                                  "pass --resume auto to continue it, or choose another out_dir")
        return None, None
    if resume == "auto":
        candidates = list_checkpoints(out_dir)[::-1]
        if not candidates:
            say(f"--resume auto: no checkpoint in {out_dir}, starting fresh")
            return None, None
    else:
        candidates = [resume]
    for i, path in enumerate(candidates):
        try:
            state = check_checkpoint(path, world_size)
            check_same_shape(state["model_shape"], shape, path)
        except CheckpointError as e:
            if i + 1 == len(candidates):
                raise
            say(f"--resume auto: {e}\n--resume auto: falling back to the previous checkpoint, {candidates[i + 1]}")
            continue
        if state["step"] > max_steps:
            raise ConfigError(
                f"{path} is at step {state['step']}, past max_steps {max_steps}: resuming would export a model "
                f"trained for {state['step']} steps. Raise --max_steps to continue it, or resume an earlier checkpoint")
        return path, state
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- writing

def save_checkpoint(accelerator, out_dir, train_state, info, keep):
    """Write OUT/checkpoint-STEP (see the module docstring); prune older ones only once it is published."""
    step = train_state.step
    final = os.path.join(out_dir, f"checkpoint-{step}")
    tmp = os.path.join(out_dir, f"{TMP_PREFIX}{step}")
    main = accelerator.is_main_process
    if main and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp)
        if main:
            state = dict(train_state.state_dict(), world_size=accelerator.num_processes, **info)
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError(basic_ios::clear)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise disk_fault(f"checkpoint-{step}", out_dir, e) from e
    accelerator.wait_for_everyone()  # every process's files (random_states_RANK.pkl, shards) are in
    if main:
        try:
            fsync_tree(tmp)
            with open(os.path.join(tmp, COMPLETE_FILE), "w", encoding="utf-8") as f:
                json.dump({"step": step, "files": manifest(tmp)}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)  # same step saved again (e.g. a rerun): replace it
            os.replace(tmp, final)  # the rename publishes it
            fsync_dir(out_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_fault(f"checkpoint-{step}", out_dir, e) from e
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
