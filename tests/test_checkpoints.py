"""Checkpoint completeness is the project's marker, so any Accelerate layout resumes.

FSDP does not run on CPU through accelerate (it shards only on accelerators; a CPU run
asking for it is refused, test_training.py), so the FSDP case is tested on the file
layout Accelerate writes under SHARDED_STATE_DICT (accelerate/utils/fsdp_utils.py): one folder of
distributed-checkpoint shards per model and per optimizer, no model.safetensors,
no optimizer.bin. The single-process and DDP layouts are tested by real runs in
test_training.py.
"""

import json
import os

import pytest
from accelerate.utils.constants import FSDP_MODEL_NAME, OPTIMIZER_NAME, RNG_STATE_NAME

from gpt_scratch.errors import CheckpointError, ConfigError
from gpt_scratch.train import checkpoints
from gpt_scratch.train.checkpoints import (COMPLETE_FILE, STATE_FILE, TrainState, check_checkpoint, list_checkpoints,
                                           resolve_resume, save_checkpoint)

SHAPE = {"model": "gpt", "n_layer": 1, "optimizer": "adamw"}


class FakeFSDPAccelerator:
    """Writes what Accelerate's save_state writes for 2 FSDP processes with SHARDED_STATE_DICT."""

    num_processes = 2
    is_main_process = is_local_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, output_dir):
        os.makedirs(output_dir)
        for sub in (f"{FSDP_MODEL_NAME}_0", f"{OPTIMIZER_NAME}_0"):
            os.makedirs(os.path.join(output_dir, sub))
            for rank in range(2):
                with open(os.path.join(output_dir, sub, f"__{rank}_0.distcp"), "wb") as f:
                    f.write(os.urandom(256))
            with open(os.path.join(output_dir, sub, ".metadata"), "wb") as f:
                f.write(b"metadata")
        for rank in range(2):
            with open(os.path.join(output_dir, f"{RNG_STATE_NAME}_{rank}.pkl"), "wb") as f:
                f.write(os.urandom(64))
        with open(os.path.join(output_dir, "custom_checkpoint_0.pkl"), "wb") as f:
            f.write(b"state")


def save(out, step, acc=None):
    state = TrainState()
    state.step = step
    return save_checkpoint(acc or FakeFSDPAccelerator(), str(out), state, {"fixed": SHAPE}, keep=2)


def test_fsdp_layout_is_complete_and_resumable(tmp_path):
    path = save(tmp_path, 4)
    assert list_checkpoints(tmp_path) == [path]
    assert not os.path.exists(os.path.join(path, "model.safetensors"))  # not what completeness looks for
    state = check_checkpoint(path)
    assert state["step"] == 4 and state["world_size"] == 2 and state["fixed"] == SHAPE
    files = json.load(open(os.path.join(path, COMPLETE_FILE)))["files"]
    assert f"{FSDP_MODEL_NAME}_0/__1_0.distcp" in files and f"{OPTIMIZER_NAME}_0/.metadata" in files
    assert STATE_FILE in files
    assert resolve_resume("auto", str(tmp_path), 10, SHAPE, print)[0] == path


def test_damaged_shard_or_missing_file_is_refused_by_name(tmp_path):
    path = save(tmp_path, 4)
    shard = os.path.join(path, f"{OPTIMIZER_NAME}_0", "__1_0.distcp")
    with open(shard, "r+b") as f:
        f.write(b"\0\0\0\0")  # same size, other bytes
    with pytest.raises(CheckpointError, match=f"{OPTIMIZER_NAME}_0/__1_0.distcp is corrupt"):
        check_checkpoint(path)
    os.remove(shard)
    with pytest.raises(CheckpointError, match=f"missing {OPTIMIZER_NAME}_0/__1_0.distcp"):
        check_checkpoint(path)


def test_save_killed_before_the_marker_is_not_a_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 2)

    def killed(root):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "manifest", killed)
    with pytest.raises(Exception, match="MiB free"):
        save(tmp_path, 4)
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no staging folder left


def test_folder_without_marker_is_incomplete(tmp_path):
    acc = FakeFSDPAccelerator()
    half = tmp_path / "checkpoint-6"
    acc.save_state(str(half))
    assert list_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointError, match=f"no {COMPLETE_FILE}"):
        check_checkpoint(str(half))


def test_resume_auto_falls_back_past_a_damaged_checkpoint_and_says_so(tmp_path):
    older, newer = save(tmp_path, 2), save(tmp_path, 4)
    with open(os.path.join(newer, f"{RNG_STATE_NAME}_1.pkl"), "ab") as f:
        f.write(b"x")
    said = []
    path, state = resolve_resume("auto", str(tmp_path), 10, SHAPE, said.append)
    assert path == older and state["step"] == 2
    assert f"{RNG_STATE_NAME}_1.pkl is corrupt" in said[0] and "falling back" in said[0]
    with pytest.raises(CheckpointError, match=f"{RNG_STATE_NAME}_1.pkl is corrupt"):  # named explicitly: refused
        resolve_resume(newer, str(tmp_path), 10, SHAPE, said.append)


def test_another_optimizer_shape_or_past_max_steps_are_refused(tmp_path):
    save(tmp_path, 4)
    with pytest.raises(ConfigError, match="past max_steps 2"):
        resolve_resume("auto", str(tmp_path), 2, SHAPE, print)
    with pytest.raises(CheckpointError, match="n_layer: checkpoint 1 vs now 2"):
        resolve_resume("auto", str(tmp_path), 10, dict(SHAPE, n_layer=2), print)
    with pytest.raises(CheckpointError, match="optimizer: checkpoint adamw vs now muon.*keeps the model shape and the "
                                              "optimizer"):
        resolve_resume("auto", str(tmp_path), 10, dict(SHAPE, optimizer="muon"), print)


def test_pruning_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        save(tmp_path, step)
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
