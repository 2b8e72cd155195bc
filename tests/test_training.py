"""Training: settings, data errors, loss going down, exact resume, safe checkpoints, 2 CPU processes."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from gpt_scratch.errors import ConfigError
from gpt_scratch.train import TrainConfig, launch, parse_config
from gpt_scratch.train import main as train_main
from gpt_scratch.train.checkpoints import check_checkpoint, list_checkpoints
from gpt_scratch.train.optim import lr_at

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "scripts", "train.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Made-up text with enough variety that no two 16-token blocks repeat."""
    rng = random.Random(0)
    syll = ["ka", "lo", "mi", "ren", "tor", "vu", "sel", "an", "dre", "po", "qui", "zen"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    lines = []
    for i in range(700):
        speaker = rng.choice(["ALDO", "BRINA", "CORVIN"])
        lines.append(f"{speaker}:\n" + " ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + ".\n")
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text("\n".join(lines))
    return str(path)


def tiny_args(corpus, out_dir, **over):
    args = dict(
        data=corpus, out_dir=str(out_dir), cache_dir=str(out_dir) + "-cache", n_layer=2, n_head=2, n_embd=32,
        block_size=16, batch_size=4, max_steps=8, warmup_steps=2, learning_rate=3e-3, min_lr=3e-4,
        eval_interval=4, eval_steps=4, log_interval=1, save_interval=4, dropout=0.1, sample_tokens=0, seed=7,
    )
    args.update(over)
    argv = []
    for k, v in args.items():
        argv += [f"--{k}", str(v)]
    return argv


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_train(argv, **kw):
    return subprocess.run([sys.executable, TRAIN_PY] + argv, env=child_env(), capture_output=True, text=True,
                          timeout=600, **kw)


def records(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    # Accelerate keeps process-wide singletons; each in-process run must start clean.
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


# ---------------------------------------------------------------- settings

def test_yaml_then_command_line_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("n_layer: 3\nlearning_rate: 1\nbatch_size: 5\ndata: some.txt\n")
    cfg = parse_config(["--config", str(cfg_file), "--batch_size", "7", "--bias", "false", "--lr_decay_steps", "20"])
    assert (cfg.n_layer, cfg.learning_rate, cfg.batch_size, cfg.bias) == (3, 1.0, 7, False)
    assert cfg.data == "some.txt" and cfg.lr_decay_steps == 20 and cfg.decay_steps == 20
    assert parse_config([]).decay_steps == TrainConfig().max_steps


@pytest.mark.parametrize(
    "argv, yaml_text, message",
    [
        (["--n_layers", "2"], None, "unrecognized arguments: --n_layers"),
        ([], "n_layers: 2\n", "unknown setting 'n_layers'"),
        (["--batch_size", "big"], None, "batch_size must be int"),
        ([], "batch_size: '8'\n", "batch_size must be int"),
        (["--bias", "maybe"], None, "bias must be bool"),
        (["--model", "rnn"], None, "model must be one of gpt, bigram, got 'rnn'"),
        (["--mixed_precision", "fp8"], None, "mixed_precision"),
        (["--n_embd", "30", "--n_head", "4"], None, "divisible"),
        (["--max_steps", "0"], None, "max_steps must be positive"),
    ],
)
def test_bad_settings_are_errors(tmp_path, capsys, argv, yaml_text, message):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = ["--config", str(tmp_path / "c.yaml")] + argv
    with pytest.raises(SystemExit) as e:
        train_main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_setting_with_default(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for f in TrainConfig.__dataclass_fields__.values():
        assert f"--{f.name}" in out
        assert f"(default: {f.default})" in out


def test_lr_schedule_of_a_shorter_run_is_a_prefix():
    long = TrainConfig(max_steps=20, warmup_steps=3)
    half = TrainConfig(max_steps=10, lr_decay_steps=20, warmup_steps=3)
    assert [lr_at(s, half) for s in range(10)] == [lr_at(s, long) for s in range(10)]
    assert lr_at(0, long) == long.learning_rate / 3 and lr_at(2, long) == long.learning_rate
    assert lr_at(19, long) > long.min_lr and lr_at(20, long) == long.min_lr


# ---------------------------------------------------------------- data errors before training

def test_missing_and_too_small_data_fail_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_main(["--data", str(tmp_path / "nope.txt"), "--out_dir", str(tmp_path / "o")])
    assert "nope.txt" in capsys.readouterr().err
    small = tmp_path / "small.txt"
    small.write_text("To be or not to be.")
    with pytest.raises(SystemExit):
        train_main(["--data", str(small), "--out_dir", str(tmp_path / "o"), "--block_size", "64"])
    err = capsys.readouterr().err
    assert "64" in err and "token" in err
    assert not os.path.exists(tmp_path / "o" / "metrics.jsonl")


# ---------------------------------------------------------------- one process

def test_training_lowers_loss_and_exports_a_loadable_model(tmp_path, corpus):
    out = tmp_path / "run"
    train_main(tiny_args(corpus, out, max_steps=30, eval_interval=10, dropout=0.0, save_interval=0,
                            learning_rate=1e-2, sample_tokens=5))
    recs = records(out)
    assert recs[0]["world_size"] == 1
    train_losses = [r["train_loss"] for r in recs if "train_loss" in r]
    vals = [r["val_loss"] for r in recs if "val_loss" in r]
    assert len(train_losses) == 30 and len(vals) == 3
    assert sum(train_losses[-5:]) / 5 < sum(train_losses[:5]) / 5 - 2.0
    assert vals[-1] < vals[0]
    assert all(k in recs[0] for k in ("step", "lr", "tokens_per_sec", "tokens"))
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-30"]

    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    model_dir = out / "model"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "README.md", "loss.png"):
        assert (model_dir / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.model_max_length == 16
    ids = torch.tensor([tok.encode("ALDO:\n")])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert torch.isfinite(loss)
    # the saved weights are the trained ones: evaluating them reproduces the logged final val loss
    cfg = TrainConfig(**{k: v for k, v in json.load(open(model_dir / "run_config.json")).items()})
    gen = pipeline("text-generation", model=str(model_dir))
    text = gen("ALDO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("ALDO:") and len(text) > len("ALDO:")
    assert cfg.max_steps == 30


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path, corpus, capsys):
    train_main(tiny_args(corpus, tmp_path / "r", max_steps=2, resume="auto", eval_interval=0))
    assert "no checkpoint" in capsys.readouterr().out
    assert list_checkpoints(tmp_path / "r")


def test_fresh_run_refuses_to_mix_with_old_checkpoints(tmp_path, corpus, capsys):
    train_main(tiny_args(corpus, tmp_path / "r", max_steps=2, eval_interval=0))
    before = sorted(os.listdir(tmp_path / "r"))
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, tmp_path / "r", max_steps=2, eval_interval=0))
    assert "--resume auto" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "r")) == before


def test_resume_errors(tmp_path, corpus, capsys):
    out = tmp_path / "r"
    train_main(tiny_args(corpus, out, max_steps=4, eval_interval=0))
    ckpt = out / "checkpoint-4"
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, out, max_steps=6, resume=str(out / "checkpoint-99")))
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, out, max_steps=6, resume="auto", n_embd=64, n_layer=3))
    err = capsys.readouterr().err
    assert "n_embd: checkpoint 32 vs now 64" in err and "n_layer: checkpoint 2 vs now 3" in err
    os.remove(ckpt / "optimizer.bin")
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, out, max_steps=6, resume=str(ckpt)))
    assert "incomplete (missing optimizer.bin)" in capsys.readouterr().err


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "r"
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def failing_save(self, output_dir=None, **kw):
        calls.append(output_dir)
        if len(calls) == 2:  # the second checkpoint dies half-written (a kill, a full disk)
            os.makedirs(output_dir, exist_ok=True)
            open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"partial")
            raise OSError("No space left on device")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", failing_save)
    with pytest.raises(SystemExit) as e:
        train_main(tiny_args(corpus, out, max_steps=8, save_interval=2, keep_checkpoints=1, eval_interval=0))
    assert e.value.code == 1  # the environment, not the input
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2"]
    state = check_checkpoint(str(out / "checkpoint-2"))
    assert state["step"] == 2 and state["world_size"] == 1
    # the next run ignores and removes the half-written folder and continues from step 2
    train_main(tiny_args(corpus, out, max_steps=4, save_interval=2, keep_checkpoints=1, eval_interval=0,
                            resume="auto"))
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-4"]
    assert not [n for n in os.listdir(out) if ".partial-" in n]


# ---------------------------------------------------------------- exactness across processes

def test_resumed_run_in_new_process_is_bit_identical(tmp_path, corpus):
    full, part = tmp_path / "full", tmp_path / "part"
    common = dict(eval_interval=4, save_interval=4)
    procs = [
        subprocess.Popen([sys.executable, TRAIN_PY] + tiny_args(corpus, full, max_steps=8, **common),
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, TRAIN_PY] + tiny_args(corpus, part, max_steps=4, lr_decay_steps=8, **common),
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    resumed = run_train(tiny_args(corpus, part, max_steps=8, lr_decay_steps=8, resume="auto", **common))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout

    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(part / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [(r["step"], r.get("train_loss"), r.get("val_loss"), r.get("lr")) for r in records(full)]
    lb = [(r["step"], r.get("train_loss"), r.get("val_loss"), r.get("lr")) for r in records(part)]
    # the half run also evaluated at its end (step 4) like the full run did at eval_interval
    assert la == lb


def test_sigterm_finishes_step_saves_and_exits_cleanly(tmp_path, corpus):
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, TRAIN_PY] + tiny_args(corpus, out, max_steps=100000, save_interval=0,
                                                               eval_interval=0),
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert p.poll() is None and time.time() < deadline, p.stderr.read()[-3000:] if p.poll() is not None else ""
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out_text, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    ckpts = list_checkpoints(out)
    assert len(ckpts) == 1
    step = check_checkpoint(ckpts[0])["step"]
    assert 3 <= step < 100000
    assert "--resume auto" in out_text
    assert not (out / "model").exists()


# ---------------------------------------------------------------- two CPU processes, launched as the README says

def readme_command(prefix):
    """The README line that starts with `prefix`, split like a shell would."""
    import shlex

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip().startswith(prefix)]
    assert len(lines) == 1, f"README should print exactly one `{prefix} ...` command, found {lines}"
    return shlex.split(lines[0])


def kill_launch(p, cmd):
    """Kill a launcher's process group and its workers, which torchelastic starts in sessions of their own (found by
    the launch's --out_dir on their command line)."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    out_dirs = {cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--out_dir"}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and out_dirs & set(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def run_group(cmd, timeout=600):
    """Run a launcher in its own process group; on a timeout kill it and its workers."""
    p = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_launch(p, cmd)
        out, err = p.communicate(timeout=60)
        raise AssertionError(f"{' '.join(cmd[:6])} ... hung for {timeout} s:\n{out[-2000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def run_readme_launch(prefix, extra, timeout=600):
    return run_group(readme_command(prefix) + extra, timeout)


def check_world_size_2(proc, out, steps):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "(world size 2)" in proc.stdout + proc.stderr
    train_recs = [r for r in records(out) if "train_loss" in r]
    assert [r["step"] for r in train_recs] == list(range(1, steps + 1)), "one set of step records"
    assert {r["world_size"] for r in train_recs} == {2}
    assert [n for n in os.listdir(out) if n == "model" or n.startswith("model")] == ["model"]
    assert check_checkpoint(list_checkpoints(out)[-1])["world_size"] == 2


def test_readme_accelerate_config_launch_trains_on_two_processes(tmp_path, corpus):
    out = tmp_path / "acc"
    launch = "accelerate launch --config_file configs/accelerate/cpu-2proc.yaml"
    common = dict(n_layer=1, batch_size=2, eval_interval=0, save_interval=2, lr_decay_steps=4)
    first = run_readme_launch(launch, tiny_args(corpus, out, max_steps=2, **common))
    assert first.returncode == 0, first.stderr[-3000:]
    # stopped at step 2, resumed under DDP (2 processes) to step 4
    p = run_readme_launch(launch, tiny_args(corpus, out, max_steps=4, resume="auto", **common))
    assert "resumed from" in p.stdout and "checkpoint-2" in p.stdout
    check_world_size_2(p, out, 4)
    # and it ends where a 2-process run that was never stopped ends, bit for bit
    full = tmp_path / "full"
    q = run_readme_launch(launch, tiny_args(corpus, full, max_steps=4, **common))
    assert q.returncode == 0, q.stderr[-3000:]
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # quiet when nothing is wrong: no launcher defaults warning, no warning about the tied lm_head
    assert "were not passed to `accelerate launch`" not in p.stderr
    assert "Removed shared tensor" not in p.stderr + p.stdout


def test_readme_main_job_launch_is_quiet(tmp_path, corpus):
    # the first command's launch, as printed (after the pip installs), with tiny settings appended
    import shlex

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        first = next(line for line in f if "pip install" in line and "scripts/train.py" in line)
    cmd = shlex.split(first.split("&&")[-1])
    out = tmp_path / "main"
    p = run_group(cmd + tiny_args(corpus, out, max_steps=2, eval_interval=0, save_interval=2))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(world size 1)" in p.stdout
    for noise in ("were not passed to `accelerate launch`", "Removed shared tensor", "Writing model shards", "Traceback"):
        assert noise not in p.stdout + p.stderr, noise


def blocks_seen(out, ranks):
    """[(step, rank, block indices)] that --record_batches wrote, in step order."""
    seen = []
    for rank in ranks:
        with open(out / f"batches-rank{rank}.jsonl") as f:
            seen += [(r["step"], rank, r["blocks"]) for r in map(json.loads, f)]
    return sorted(seen)


def test_readme_torchrun_launch_shares_the_data_and_matches_one_process(tmp_path, corpus):
    two, one = tmp_path / "two", tmp_path / "one"
    steps = 6
    p = run_readme_launch("torchrun --standalone --nproc_per_node 2",
                          tiny_args(corpus, two, batch_size=2, max_steps=steps, dropout=0.0, record_batches=True,
                                    eval_interval=0, save_interval=0))
    check_world_size_2(p, two, steps)
    q = run_train(tiny_args(corpus, one, batch_size=4, max_steps=steps, dropout=0.0, eval_interval=0, save_interval=0,
                            record_batches=True))
    assert q.returncode == 0, q.stderr[-3000:]
    # the two processes together take exactly the blocks one process of twice the batch takes, step by step
    by_two = [(step, b) for step, rank, blocks in blocks_seen(two, (0, 1)) for b in blocks]
    by_one = [(step, b) for step, rank, blocks in blocks_seen(one, (0,)) for b in blocks]
    assert by_two == by_one and len({b for _, b in by_one}) == steps * 4, "a block was seen twice within the epoch"
    v2 = [r["val_loss"] for r in records(two) if "val_loss" in r][-1]
    v1 = [r["val_loss"] for r in records(one) if "val_loss" in r][-1]
    assert abs(v2 - v1) < 0.05 * v1


def test_launch_that_starts_fewer_processes_than_asked_is_refused(tmp_path, corpus):
    # accelerate 1.15 turns `--cpu --num_processes 2` into ONE process; it must not train alone silently
    out = tmp_path / "r"
    args = tiny_args(corpus, out, max_steps=2)
    p = run_group(["accelerate", "launch", "--cpu", "--num_processes", "2", TRAIN_PY] + args, timeout=300)
    # (accelerate's launcher then adds its own CalledProcessError traceback: not ours to silence)
    assert p.returncode != 0 and "train.py: error: accelerate launch was asked for several processes" in p.stderr
    assert "started ONE" in p.stderr and "gpt_scratch/" not in p.stderr  # no traceback from the project
    assert "accelerate launch --config_file configs/accelerate/cpu-2proc.yaml scripts/train.py --data" in p.stderr
    assert "torchrun --standalone --nproc_per_node 2 scripts/train.py --data" in p.stderr
    assert not os.path.exists(out / "metrics.jsonl")


def test_world_size_mismatch_is_refused():
    with pytest.raises(ConfigError, match="each would train alone"):
        launch.check_launch(1, env={"WORLD_SIZE": "2"}, argv=[])
    launch.check_launch(2, env={"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "x", "ACCELERATE_DYNAMO_BACKEND": "NO"},
                        argv=[])
    launch.check_launch(1, env={"ACCELERATE_DYNAMO_BACKEND": "NO"}, argv=[])  # a plain 1-process launch


def test_cpu_threads_ignore_accelerate_launch_default():
    # accelerate launch exports OMP_NUM_THREADS=1: a 1-process CPU run must still use every core
    cores = len(os.sched_getaffinity(0))
    by_accelerate = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO"}
    assert launch.cpu_threads(TrainConfig(), 1, by_accelerate) == cores
    assert launch.cpu_threads(TrainConfig(), 1, dict(by_accelerate, LOCAL_WORLD_SIZE="2")) == max(1, cores // 2)
    assert launch.cpu_threads(TrainConfig(cpu_threads=3), 1, by_accelerate) == 3
    # a user's own OMP_NUM_THREADS (no accelerate launch) is kept
    assert launch.cpu_threads(TrainConfig(), 1, {"OMP_NUM_THREADS": "1"}) == torch.get_num_threads()


def fake_cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma " + flags + "\n")
    return str(path)


def test_bf16_decided_by_the_cpu_flags_not_a_busy_timing(monkeypatch, tmp_path):
    from gpt_scratch.train import metrics

    read_flags = launch.cpu_bf16_flags
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda *a, **k: pytest.fail("timed, though flags were there"))
    # AVX2 only: bf16 refused, auto picks fp32, whatever a timing on a busy machine would say
    monkeypatch.setattr(launch, "cpu_bf16_flags", lambda: read_flags(fake_cpuinfo(tmp_path, "")))
    with pytest.raises(ConfigError, match="no bf16 matrix instructions.*use --mixed_precision no"):
        launch.resolve_precision("bf16", use_cpu=True)
    assert launch.resolve_precision("no", use_cpu=True) == "no"
    assert launch.resolve_precision("auto", use_cpu=True) == "no"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        launch.resolve_precision("fp16", use_cpu=True)
    # AVX512-BF16 (or AMX): bf16 allowed and picked by auto
    monkeypatch.setattr(launch, "cpu_bf16_flags", lambda: read_flags(fake_cpuinfo(tmp_path, "avx512f avx512_bf16")))
    assert launch.resolve_precision("bf16", use_cpu=True) == "bf16"
    assert launch.resolve_precision("auto", use_cpu=True) == "bf16"


def test_bf16_timed_where_the_cpu_flags_cannot_be_read(monkeypatch):
    from gpt_scratch.train import metrics

    monkeypatch.setattr(launch, "cpu_bf16_flags", lambda: None)
    slow = {torch.float32: 100e9, torch.bfloat16: 1e9}  # what an AVX2-only CPU measures
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda device, dtype, **kw: slow[dtype])
    with pytest.raises(ConfigError, match="use --mixed_precision no"):
        launch.resolve_precision("bf16", use_cpu=True)
    fast = {torch.float32: 100e9, torch.bfloat16: 300e9}
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda device, dtype, **kw: fast[dtype])
    assert launch.resolve_precision("bf16", use_cpu=True) == "bf16"


@pytest.mark.parametrize("name", ["shakespeare", "bigram", "gpt2-124m", "finetune-shakespeare"])
def test_shipped_configs_parse(name):
    cfg = parse_config(["--config", os.path.join(REPO, "configs", f"{name}.yaml")])
    assert cfg.out_dir == f"out/{name}"
    assert cfg.model == ("bigram" if name == "bigram" else "gpt")
    assert (cfg.init_from == "openai-community/gpt2") == (name == "finetune-shakespeare")


def test_train_gives_the_caller_its_thread_count_back(tmp_path, corpus):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_main(tiny_args(corpus, tmp_path / "r", max_steps=1, eval_interval=0, cpu_threads=2))
        assert torch.get_num_threads() == 1  # in-process callers (and later tests) keep their setting
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad, message", [
    (dict(batch_size="16"), "batch_size must be int, got '16'"), (dict(max_steps=2.5), "max_steps must be int"),
    (dict(dropout=None), "dropout cannot be empty"), (dict(seed=True), "seed must be int, got True"),
    (dict(out_dir=5), "out_dir must be str"), (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
])
def test_python_api_refuses_what_the_command_line_refuses(bad, message):
    """TrainConfig(...) from Python checks types as a YAML file's values are checked (no raw TypeError mid-run)."""
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)


def test_validation_text_is_the_validation_tokens_decoded(tmp_path):
    """validation.jsonl (what lm-eval scores) holds the validation split's documents, decoded whole even where a
    block boundary cuts a character's bytes; <|endoftext|> separates them and empty documents are left out."""
    from gpt_scratch.tokenizer import EOT_ID, load_tiktoken
    from gpt_scratch.train.loop import write_validation_text

    enc = load_tiktoken()
    docs = ["Où est le café? 日本語 😀\n" * 3, "plain", "ÿ\n\n\"quoted\" \\ back"]
    ids = [EOT_ID] + enc.encode_ordinary(docs[0]) + [EOT_ID, EOT_ID] + enc.encode_ordinary(docs[1]) + [EOT_ID]
    ids += enc.encode_ordinary(docs[2])
    for block in (1, 3, 7):  # GPT-2 splits ù, 日, 😀 over several tokens: block boundaries cut them
        val = [torch.tensor(ids[i:i + block]) for i in range(0, len(ids), block)]
        write_validation_text(val, tmp_path / "v.jsonl")
        with open(tmp_path / "v.jsonl", encoding="utf-8") as f:
            assert [json.loads(line)["text"] for line in f] == docs, block
