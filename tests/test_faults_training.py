"""Faults a training user meets, each reproduced: nothing lost, nothing silently wrong, `error:` not a traceback.

Run this file alone to see the guarantees: a diverging run stops before the weights are
poisoned; metrics.jsonl survives a cut-off line and a failed rewrite; a damaged checkpoint
is refused by name and --resume auto falls back past it; a full disk during a save names
disk space and leaves no temporary folder; every file of a checkpoint is fsynced before
the rename that publishes it.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from gpt_scratch.train import checkpoints, metrics
from gpt_scratch.train import main as train_main
from gpt_scratch.train.checkpoints import list_checkpoints

from test_training import _fresh_accelerate_state, corpus, records, tiny_args  # noqa: F401  (fixtures)


def run_main(argv, capsys):
    """training.main's exit code (0 when it returns) and what it printed."""
    try:
        train_main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def finite_weights(checkpoint):
    weights = load_file(os.path.join(checkpoint, "model.safetensors"))
    return all(torch.isfinite(t).all() for t in weights.values())


# ---------------------------------------------------------------- a diverging run

def test_non_finite_loss_stops_before_the_weights_are_poisoned(tmp_path, corpus, capsys):  # noqa: F811
    out = tmp_path / "r"
    code, _, err = run_main(tiny_args(corpus, out, max_steps=30, learning_rate=1e4, min_lr=0, warmup_steps=0,
                                      grad_clip=0, save_interval=1, eval_interval=0, dropout=0.0), capsys)
    assert code == 1, err[-2000:]
    assert "non-finite" in err and "Traceback" not in err
    assert "lower --learning_rate (now 10000.0)" in err and "--grad_clip 1.0" in err
    step = int(err.split(" at step ")[1].split()[0])
    assert 1 <= step < 30
    newest = list_checkpoints(out)[-1]
    assert newest.endswith(f"checkpoint-{step - 1}") and finite_weights(newest)
    assert not (out / "model").exists()  # nothing exported
    assert all(finite_weights(c) for c in list_checkpoints(out))


def test_diverging_resume_keeps_the_last_good_checkpoint_resumable(tmp_path, corpus, capsys):  # noqa: F811
    out = tmp_path / "r"
    sane = dict(max_steps=2, eval_interval=0, save_interval=2, dropout=0.0)
    assert run_main(tiny_args(corpus, out, **sane), capsys)[0] == 0
    # the same run continued with an exploding learning rate: stops, checkpoint-2 stays the newest
    code, _, err = run_main(tiny_args(corpus, out, **dict(sane, max_steps=40, save_interval=0, learning_rate=1e4,
                                                          min_lr=0, grad_clip=0), resume="auto"), capsys)
    assert code == 1 and "non-finite" in err and "checkpoint-2" in err
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert finite_weights(out / "checkpoint-2")
    # and it resumes
    code, outp, err = run_main(tiny_args(corpus, out, **dict(sane, max_steps=4), resume="auto"), capsys)
    assert code == 0, err[-2000:]
    assert "resumed from" in outp and (out / "model" / "model.safetensors").is_file()


# ---------------------------------------------------------------- metrics.jsonl

def test_cut_off_metrics_line_is_skipped_and_said(tmp_path, corpus, capsys):  # noqa: F811
    out = tmp_path / "r"
    assert run_main(tiny_args(corpus, out, max_steps=4, eval_interval=0, save_interval=2), capsys)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train_lo')  # what a full disk leaves
    code, _, err = run_main(tiny_args(corpus, out, max_steps=6, eval_interval=0, save_interval=2, resume="auto"),
                            capsys)
    assert code == 0, err[-2000:]
    assert "skipped 1 unreadable line" in err
    steps = [r["step"] for r in records(out) if "train_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_failed_metrics_rewrite_keeps_the_history(tmp_path, monkeypatch):
    from gpt_scratch.folder import durable

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in range(1, 101)]
    path.write_text("".join(lines))
    real_replace = os.replace

    def killed_before_the_rename(src, dst):  # the staging file is written in full, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(durable.os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        metrics.MetricsLog(str(tmp_path)).keep_until(50)
    assert path.read_text() == "".join(lines)  # the rewrite never touched the published file
    monkeypatch.setattr(durable.os, "replace", real_replace)
    metrics.MetricsLog(str(tmp_path)).keep_until(50)
    assert [r["step"] for r in metrics.read_records(str(path))] == list(range(1, 51))
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


KILLED_REWRITE = """\
import os, sys, time
from gpt_scratch.folder import durable
from gpt_scratch.train import metrics
real_open = open
def slow_open(path, mode="r", *a, **k):
    f = real_open(path, mode, *a, **k)
    if ".partial-" in str(path) and "w" in mode:
        write = f.write
        def half_then_hang(text):
            write(text[: len(text) // 2]); f.flush()
            print("HALF", flush=True)
            time.sleep(60)
        f.write = half_then_hang
    return f
durable.open = slow_open
metrics.MetricsLog(sys.argv[1]).keep_until(50)
"""


def test_kill_9_during_the_metrics_rewrite_keeps_the_history(tmp_path):
    import signal
    import subprocess
    import sys

    from test_training import REPO, child_env

    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in range(1, 60001))
    path.write_text(text)
    p = subprocess.Popen([sys.executable, "-c", KILLED_REWRITE, str(tmp_path)], cwd=REPO, env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "HALF", p.stderr.read()[-2000:]
    p.send_signal(signal.SIGKILL)  # a real kill, mid-rewrite
    p.wait(timeout=60)
    assert path.read_text() == text  # all 60,000 records still there
    assert [n for n in os.listdir(tmp_path) if ".partial-" in n]  # the half-written staging file is all it left
    metrics.MetricsLog(str(tmp_path)).keep_until(50)  # the next start cleans up and rewrites
    assert [r["step"] for r in metrics.read_records(str(path))] == list(range(1, 51))
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


# ---------------------------------------------------------------- damaged checkpoints

def test_corrupt_random_states_is_refused_and_auto_falls_back(tmp_path, corpus, capsys):  # noqa: F811
    out = tmp_path / "r"
    assert run_main(tiny_args(corpus, out, max_steps=4, eval_interval=0, save_interval=2), capsys)[0] == 0
    rng = out / "checkpoint-4" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:-10] + b"garbage!!!")  # Accelerate's load_state would skip it silently
    code, _, err = run_main(tiny_args(corpus, out, max_steps=6, eval_interval=0, save_interval=2,
                                      resume=str(out / "checkpoint-4")), capsys)
    assert code == 2 and "random_states_0.pkl is corrupt" in err and "Traceback" not in err
    code, outp, err = run_main(tiny_args(corpus, out, max_steps=6, eval_interval=0, save_interval=2, resume="auto"),
                               capsys)
    assert code == 0, err[-2000:]
    assert "random_states_0.pkl is corrupt" in outp and "falling back to the previous checkpoint" in outp
    assert "resumed from" in outp and "checkpoint-2 at step 2" in outp


def test_resume_past_max_steps_is_an_error_not_an_export(tmp_path, corpus, capsys):  # noqa: F811
    out = tmp_path / "r"
    assert run_main(tiny_args(corpus, out, max_steps=4, eval_interval=0), capsys)[0] == 0
    before = os.path.getmtime(out / "model" / "model.safetensors")
    code, _, err = run_main(tiny_args(corpus, out, max_steps=2, eval_interval=0, resume="auto"), capsys)
    assert code == 2 and "step 4, past max_steps 2" in err and "Raise --max_steps" in err
    assert os.path.getmtime(out / "model" / "model.safetensors") == before


# ---------------------------------------------------------------- the disk

def test_full_disk_during_a_save_names_disk_space_and_leaves_no_temporary(tmp_path, corpus, capsys, monkeypatch):  # noqa: F811
    from accelerate import Accelerator

    real_save = Accelerator.save_state

    def disk_full(self, output_dir=None, **kw):
        real_save(self, output_dir, **kw)
        if "checkpoint-4" in output_dir:  # what torch.save raises when the disk fills up
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos; basic_ios::clear: iostream error")

    monkeypatch.setattr(Accelerator, "save_state", disk_full)
    out = tmp_path / "r"
    code, _, err = run_main(tiny_args(corpus, out, max_steps=6, eval_interval=0, save_interval=2), capsys)
    assert code == 1 and "Traceback" not in err
    assert "checkpoint-4" in err and "MiB free" in err and "free disk space" in err
    assert not [n for n in os.listdir(out) if ".partial-" in n]
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2"]


def test_full_disk_during_the_export_keeps_the_previous_model_folder(tmp_path, corpus, capsys, monkeypatch):  # noqa: F811
    from transformers import PreTrainedModel

    out = tmp_path / "r"
    assert run_main(tiny_args(corpus, out, max_steps=2, eval_interval=0, save_interval=2), capsys)[0] == 0
    before = (out / "model" / "model.safetensors").read_bytes()
    real = PreTrainedModel.save_pretrained

    def disk_full(self, path, *a, **k):
        real(self, path, *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    code, _, err = run_main(tiny_args(corpus, out, max_steps=4, eval_interval=0, save_interval=2, resume="auto"),
                            capsys)
    assert code == 1 and "disk space" in err and "Traceback" not in err
    assert (out / "model" / "model.safetensors").read_bytes() == before  # the previous model, untouched
    assert sorted(n for n in os.listdir(out) if "model" in n) == ["model"]  # no staging folder left
    assert list_checkpoints(out)[-1].endswith("checkpoint-4")  # the run's progress is saved


def test_every_checkpoint_file_is_fsynced_before_the_rename(tmp_path, corpus, capsys, monkeypatch):  # noqa: F811
    from gpt_scratch.folder import durable

    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    out = tmp_path / "r"
    assert run_main(tiny_args(corpus, out, max_steps=2, eval_interval=0, save_interval=2), capsys)[0] == 0
    publish = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2].endswith("checkpoint-2"))
    tmp = events[publish][1]
    synced = {e[1] for e in events[:publish] if e[0] == "fsync"}
    final = out / "checkpoint-2"
    files = [os.path.join(d, n) for d, _, ns in os.walk(final) for n in ns]
    assert len(files) >= 5
    for f in files:
        assert os.path.join(tmp, os.path.relpath(f, final)) in synced, f
    assert tmp in synced  # the folder's entries too
    assert json.load(open(final / checkpoints.COMPLETE_FILE))["step"] == 2


# ---------------------------------------------------------------- bad input: error, not traceback

def test_yaml_syntax_error_and_out_dir_that_is_a_file(tmp_path, corpus, capsys):  # noqa: F811
    bad = tmp_path / "c.yaml"
    bad.write_text("n_layer: 2\nlearning_rate: [1e-3\nbatch_size: 4\n")
    code, _, err = run_main(["--config", str(bad)], capsys)
    assert code == 2 and "is not valid YAML at line" in err and "Traceback" not in err
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    code, _, err = run_main(tiny_args(corpus, a_file), capsys)
    assert code == 2 and "out_dir" in err and "is a file" in err


@pytest.mark.parametrize("over, message", [
    (dict(learning_rate="nan"), "learning_rate must be a finite number"),
    (dict(beta1=2), "beta1 must be in [0, 1)"),
    (dict(grad_clip=-1), "grad_clip must be >= 0"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(seed=-5), "seed must be in [0, 2**32)"),
    (dict(dataset_split="test"), "Drop --dataset_split"),
    (dict(n_layer=10**12), "Lower n_layer, n_embd or block_size"),  # used to allocate until the kernel killed it
    (dict(cache_dir="A_FILE"), "as the data cache (File exists: a file is in the way"),
    (dict(cpu_threads=100000), "cpu_threads 100000 is far more than the"),  # would start 100,000 threads
    (dict(data=None, dataset="BAD_JSON"), "JSON parse error"),  # the reason, not "an error occurred while generating"
    (dict(data=None, dataset="CORPUS", dataset_split="test"), "local files give one split"),
])
def test_bad_training_inputs_are_errors_that_name_the_fix(tmp_path, corpus, capsys, over, message):  # noqa: F811
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "bad.json").write_text("{cut off")
    named = {"A_FILE": str(a_file), "CORPUS": corpus, "BAD_JSON": str(tmp_path / "bad.json")}
    over = {k: named.get(v, v) if isinstance(v, str) else v for k, v in over.items()}
    code, _, err = run_main(tiny_args(corpus, tmp_path / "o", **over), capsys)
    assert code == 2 and message in err and "Traceback" not in err, err[-2000:]
