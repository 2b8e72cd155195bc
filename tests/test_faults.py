"""Faults a user meets outside training, reproduced: broken model folders, bad options, a full disk.

Every bad input must end in `prog: error: ...` with exit 2 (bad input) or 1 (the
environment), naming the file and what is wrong, never in a traceback or in exit 0
with a wrong result. Tiny models made here; the command lines run in-process
(main(argv)), and two real subprocesses prove that no traceback reaches the user.
"""

import builtins
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import gpt_scratch.folder.model_folder as mf
from gpt_scratch.folder.model_folder import quiet_transformers
from gpt_scratch import BigramConfig, BigramForCausalLM, GPTConfig, GPTForCausalLM, save_model_folder
from gpt_scratch.folder.convert import main as convert_main
from gpt_scratch.errors import ConfigError, EnvironmentFault, ModelFolderError
from gpt_scratch.folder.generate import main as generate_main
from gpt_scratch.tokenizer import load_tokenizer, save_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 32
FC = "transformer.h.0.mlp.c_fc.weight"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=BLOCK)).eval()
    folder = tmp_path_factory.mktemp("faults") / "good"
    save_model_folder(model, folder)
    return folder


@pytest.fixture(scope="module")
def stock_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("faults") / "stock"
    GPT2LMHeadModel(GPT2Config(n_positions=BLOCK, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    return folder


def digest(folder):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


# ---------------------------------------------------------------- ways a folder breaks

def truncate(name, keep=0.5):
    def f(d):
        p = d / name
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
    return f


def replace_with_folder(name):
    def f(d):
        (d / name).unlink()
        (d / name).mkdir()
    return f


def write(name, text):
    return lambda d: (d / name).write_text(text)


def edit_config(**changes):
    def f(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return f


def edit_json(name, **changes):
    def f(d):
        values = json.loads((d / name).read_text())
        values.update(changes)
        (d / name).write_text(json.dumps(values))
    return f


def edit_weights(fn):
    def f(d):
        sd = load_file(d / "model.safetensors")
        fn(sd)
        save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    return f


def set_value(key, value):
    def fn(sd):
        sd[key][0, 0] = value
    return fn


BROKEN = {
    # name: (how the folder breaks, exit code, fragments the message must hold)
    "config truncated": (truncate("config.json"), 2, ["config.json is not valid JSON"]),
    "config empty": (truncate("config.json", 0), 2, ["config.json is empty"]),
    "config a list": (write("config.json", "[1, 2]"), 2, ["holds a JSON list"]),
    "config a folder": (replace_with_folder("config.json"), 2, ["config.json is a folder"]),
    "config binary": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00"), 2, ["not UTF-8"]),
    "config without model_type": (write("config.json", "{}"), 2, ["has no model_type"]),
    "config unknown model_type": (edit_config(model_type="gpt9"), 2, ["'gpt9'", "neither transformers"]),
    "config wrong value type": (edit_config(n_layer="1"), 2, ["not a usable config", "n_layer"]),
    "weights truncated": (truncate("model.safetensors"), 2, ["model.safetensors is not a complete safetensors"]),
    "weights empty": (truncate("model.safetensors", 0), 2, ["not a complete safetensors"]),
    "weights a folder": (replace_with_folder("model.safetensors"), 2, ["model.safetensors is a folder"]),
    "weights missing": (lambda d: (d / "model.safetensors").unlink(), 2, ["no model.safetensors"]),
    "weights miss a tensor": (edit_weights(lambda sd: sd.pop("transformer.h.0.ln_1.weight")), 2,
                              ["missing 1 tensor", "transformer.h.0.ln_1.weight", "random"]),
    "weights have an extra tensor": (edit_weights(lambda sd: sd.update(extra=torch.zeros(3))), 2,
                                     ["does not have: extra"]),
    "weights of another shape": (edit_config(n_embd=32), 2, ["transformer.h.0.attn.c_attn.weight is (48, 16), expected (96, 32)"]),
    "weights of fewer layers": (edit_config(n_layer=2), 2, ["missing", "transformer.h.1.attn.c_attn.weight"]),
    "weights with nan": (edit_weights(set_value(FC, float("nan"))), 2, [FC, "1 nan", "diverged", "learning_rate"]),
    "weights with inf": (edit_weights(set_value(FC, float("inf"))), 2, [FC, "1 inf", "diverged"]),
    "generation_config truncated": (truncate("generation_config.json"), 2, ["generation_config.json is not valid JSON"]),
    "generation_config eos a string": (edit_json("generation_config.json", eos_token_id="50256"), 2,
                                       ["eos_token_id must be a token id", "'50256'"]),
    "generation_config length a string": (edit_json("generation_config.json", max_new_tokens="16"), 2,
                                          ["max_new_tokens must be a whole number"]),
    "tokenizer length negative": (edit_json("tokenizer_config.json", model_max_length=-5), 2,
                                  ["model_max_length to -5"]),
    "tokenizer.json truncated": (truncate("tokenizer.json"), 2, ["tokenizer.json is not valid JSON", "save_tokenizer"]),
    "tokenizer.json a folder": (replace_with_folder("tokenizer.json"), 2, ["tokenizer.json is a folder"]),
}


@pytest.fixture(scope="module")
def broken(good, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    out = {}
    for name, (breaks, _, _) in BROKEN.items():
        d = root / name.replace(" ", "_")
        shutil.copytree(good, d)
        breaks(d)
        out[name] = d
    return out


def run_cli(main, argv, capsys, stdin=None):
    """(exit code, stderr) of a command line run in-process; any exception but SystemExit fails the test."""
    kwargs = {"stdin": stdin if stdin is not None else io.StringIO("")} if main is generate_main else {}
    try:
        code = main(argv, **kwargs)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(BROKEN))
def test_generate_refuses_a_broken_folder_by_name(case, broken, capsys):
    _, code, fragments = BROKEN[case]
    got, err = run_cli(generate_main, ["--model", str(broken[case]), "--prompt", "Hi", "--max-new-tokens", "2"], capsys)
    assert got == code, (case, err)
    assert err.startswith("generate.py: error: "), err
    for fragment in fragments:
        assert fragment in err, (case, fragment, err)


def test_the_good_folder_generates(good, capsys):
    code, err = run_cli(generate_main, ["--model", str(good), "--prompt", "Hi", "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert "Loading weights" not in err  # no progress bar when nothing is wrong


def test_project_loaders_refuse_what_from_pretrained_accepts(broken):
    """transformers fills a missing tensor with random numbers, exit 0; the project's loaders refuse it."""
    folder = broken["weights miss a tensor"]
    _, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == {"transformer.h.0.ln_1.weight"}  # the fault is real
    for check in (mf.load_model, mf.check_model_folder):
        with pytest.raises(ModelFolderError, match="transformer.h.0.ln_1.weight"):
            check(folder)


def test_tied_output_head_is_not_reported_missing(good):
    from safetensors import safe_open

    with safe_open(good / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()  # stored once, as transformer.wte.weight
    model = mf.load_model(good)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_bigram_folder_passes_the_checks(tmp_path):
    torch.manual_seed(0)
    save_model_folder(BigramForCausalLM(BigramConfig(n_embd=8, block_size=16, tie_word_embeddings=False)),
                      tmp_path / "bigram")
    assert mf.check_model_folder(tmp_path / "bigram").config.model_type == "gpt_scratch_bigram"
    sd = load_file(tmp_path / "bigram" / "model.safetensors")
    sd.pop(sorted(sd)[0])
    save_file(sd, tmp_path / "bigram" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match="missing 1 tensor"):
        mf.check_model_folder(tmp_path / "bigram")


def test_unreadable_config_is_an_environment_error(good, monkeypatch, capsys):
    """Permission denied (simulated: the tests may run as root, who reads anything) exits 1 and says so."""
    real_open = builtins.open

    def denied(path, *a, **kw):
        if str(path).endswith("config.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(mf, "open", denied, raising=False)
    code, err = run_cli(generate_main, ["--model", str(good), "--prompt", "Hi"], capsys)
    assert code == 1 and "permission denied" in err and "config.json" in err, err


def test_generate_bad_options_and_inputs(good, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    m = ["--model", str(good)]
    cases = [
        (["--model", str(tmp_path / "a_file")], None, "is a file, not a model folder"),
        (["--model", ""], None, "the model folder name is empty"),
        (m + ["--seed", "-1"], None, "--seed: must be in 0 .. 4294967295"),
        (m + ["--seed", str(2**40)], None, "--seed: must be in 0"),
        (m + ["--prompt-file", str(tmp_path)], None, "cannot read --prompt-file"),
        (m + ["--prompt-file", str(tmp_path / "latin1.txt")], None, "cannot read --prompt-file"),
        (m + ["--prompt", "-"], io.TextIOWrapper(io.BytesIO(b"caf\xe9")), "standard input is not UTF-8"),
    ]
    for argv, stdin, message in cases:
        code, err = run_cli(generate_main, argv, capsys, stdin=stdin)
        assert code == 2 and message in err, (argv, err)


def test_tokenizer_of_another_vocabulary_is_refused(tmp_path, capsys):
    """GPT-2's tokenizer beside a model with a 300-token vocabulary: ids past the embedding, refused by name."""
    torch.manual_seed(0)
    save_model_folder(GPTForCausalLM(GPTConfig(vocab_size=300, n_layer=1, n_head=2, n_embd=16, block_size=BLOCK,
                                               bos_token_id=0, eos_token_id=0)), tmp_path / "small")
    code, err = run_cli(generate_main, ["--model", str(tmp_path / "small"), "--prompt", "Hello world"], capsys)
    assert code == 2 and "vocab_size is 300" in err, err


def test_save_tokenizer_refuses_an_empty_name_or_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad, message in (("", "folder name is empty"), (tmp_path / "f", "is a file")):
        with pytest.raises(ModelFolderError, match=message):
            save_tokenizer(bad)
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("bad", [-5, 0, "512", 1.5, True, None])
def test_load_tokenizer_refuses_a_bad_length(bad):
    with pytest.raises(ConfigError, match="model_max_length must be a positive integer"):
        load_tokenizer(model_max_length=bad)


# ---------------------------------------------------------------- convert_gpt2.py

def test_convert_bad_inputs(good, stock_gpt2, broken, tmp_path, capsys):
    torch.manual_seed(0)
    save_model_folder(BigramForCausalLM(BigramConfig(n_embd=8, block_size=16)), tmp_path / "bigram")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    stock_missing = tmp_path / "stock_missing"
    shutil.copytree(stock_gpt2, stock_missing)
    edit_weights(lambda sd: sd.pop("transformer.h.0.ln_2.bias"))(stock_missing)
    out = str(tmp_path / "out")
    capsys.readouterr()  # the setup's own output
    cases = [
        (["--from-hf", str(good), "--out", out], "use --to-hf"),
        (["--to-hf", str(stock_gpt2), "--out", out], "use --from-hf"),
        (["--to-hf", str(tmp_path / "bigram"), "--out", out], "no GPT-2 equivalent"),
        (["--from-hf", str(tmp_path / "nope"), "--out", out], "does not exist"),
        (["--from-hf", str(tmp_path / "a_file"), "--out", out], "is a file"),
        (["--from-hf", str(stock_gpt2), "--out", str(tmp_path / "a_file")], "is a file, not a folder"),
        (["--from-hf", str(stock_gpt2), "--out", str(tmp_path / "full")], "nothing was overwritten"),
        (["--from-hf", str(stock_missing), "--out", out], "transformer.h.0.ln_2.bias"),
        (["--to-hf", str(broken["weights miss a tensor"]), "--out", out], "transformer.h.0.ln_1.weight"),
        (["--to-hf", str(broken["weights with nan"]), "--out", out], "diverged"),
        (["--to-hf", str(broken["config truncated"]), "--out", out], "config.json is not valid JSON"),
        (["--to-hf", str(broken["weights truncated"]), "--out", out], "not a complete safetensors"),
    ]
    for argv, message in cases:
        code, err = run_cli(convert_main, argv, capsys)
        assert code == 2 and err.startswith("convert_gpt2.py: error: ") and message in err, (argv, err)
    assert not os.path.exists(out)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def disk_fills_up(monkeypatch):
    """The safetensors writer runs out of space half-way through, as on a full disk."""
    import transformers.modeling_utils as mu

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(mu, "safe_save_file", full)


@pytest.mark.parametrize("direction", ["--from-hf", "--to-hf"])
def test_convert_on_a_full_disk_leaves_nothing_and_the_retry_works(direction, good, stock_gpt2, tmp_path, capsys):
    source = stock_gpt2 if direction == "--from-hf" else good
    out = tmp_path / "converted"
    with pytest.MonkeyPatch.context() as mp:
        disk_fills_up(mp)
        code, err = run_cli(convert_main, [direction, str(source), "--out", str(out)], capsys)
    assert code == 1 and "no space left on the disk" in err and "free disk space" in err, err
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no staging folder left behind
    code, err = run_cli(convert_main, [direction, str(source), "--out", str(out)], capsys)
    assert code == 0, err
    mf.check_model_folder(out)  # complete: every tensor there, all finite


def test_a_failed_save_keeps_the_previous_folder(good, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(good, folder)
    before = digest(folder)
    disk_fills_up(monkeypatch)
    with pytest.raises(EnvironmentFault, match="no space left"):
        save_model_folder(mf.load_model(good), folder)
    assert digest(folder) == before
    assert os.listdir(tmp_path) == ["model"]


def test_save_fsyncs_every_file_and_folder_before_publishing(good, tmp_path, monkeypatch):
    """The rename publishes only durable data: every file and folder is fsync'ed first, the parent after."""
    model = mf.load_model(good)
    synced, real_fsync = [], os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    t0 = time.perf_counter()
    save_model_folder(model, tmp_path / "model")
    with_fsync = time.perf_counter() - t0
    files = sorted(os.listdir(tmp_path / "model"))
    if os.path.exists("/proc/self/fd"):
        names = [os.path.basename(p) for p in synced]
        assert set(files) <= set(names), (files, names)
        assert names[-1] == tmp_path.name  # the parent, after the rename
    else:
        assert len(synced) >= len(files) + 2
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    t0 = time.perf_counter()
    save_model_folder(model, tmp_path / "model2")
    without = time.perf_counter() - t0
    print(f"\nsave_model_folder ({len(files)} files, {os.path.getsize(tmp_path / 'model' / 'model.safetensors') / 1e6:.1f} MB"
          f" of weights): {with_fsync * 1e3:.0f} ms with fsync, {without * 1e3:.0f} ms without")


def test_save_model_folder_refuses_a_file_as_the_folder(good, tmp_path):
    (tmp_path / "model").write_text("not a folder")
    model = mf.load_model(good)
    with pytest.raises(ModelFolderError, match="is a file, not a folder"):
        save_model_folder(model, tmp_path / "model")
    with pytest.raises(ModelFolderError, match="a part of the path above it is a file"):
        save_model_folder(model, tmp_path / "model" / "sub")
    assert (tmp_path / "model").read_text() == "not a folder"


# ---------------------------------------------------------------- the real scripts: no traceback reaches the user

def test_scripts_print_an_error_not_a_traceback(broken, good, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    runs = {
        "generate": [sys.executable, os.path.join(REPO, "scripts", "generate.py"), "--model",
                     str(broken["weights truncated"]), "--prompt", "Hi"],
        "convert": [sys.executable, os.path.join(REPO, "scripts", "convert_gpt2.py"), "--from-hf", str(good),
                    "--out", str(tmp_path / "out")],
    }
    procs = {k: subprocess.Popen(v, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, v in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, err[-2000:])
        assert "Traceback" not in err and "error: " in err, (name, err[-2000:])
        assert out == ""


# ---------------------------------------------------------------- push_to_hub.py: refused before anything is sent

def test_push_refuses_a_broken_folder_before_any_request(broken, good, tmp_path, capsys, monkeypatch):
    from gpt_scratch.folder.hub import main as push_main

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail with exit 1
    (tmp_path / "a_file").write_text("x")
    listed = shutil.copytree(good, tmp_path / "run_config_list")
    (listed / "run_config.json").write_text("[1, 2]")
    cases = [
        ("weights with nan", f"tensor {FC} holds non-finite values"),
        ("weights miss a tensor", "transformer.h.0.ln_1.weight"),
        ("weights have an extra tensor", "extra"),
        ("weights truncated", "not a complete safetensors"),
        ("config truncated", "config.json is not valid JSON"),
        ("config a list", "holds a JSON list"),
        ("generation_config truncated", "generation_config.json is not valid JSON"),
        ("tokenizer.json truncated", "tokenizer.json is not valid JSON"),
        ("tokenizer length negative", "model_max_length to -5"),
    ]
    argv = lambda folder: ["--model", str(folder), "--repo-id", "alice/tiny", "--token", "hf_FAKEtoken1234567890"]
    for case, message in cases:
        code, err = run_cli(push_main, argv(broken[case]), capsys)
        assert code == 2 and err.startswith("push_to_hub.py: error: ") and message in err, (case, err)
    bad_code = shutil.copytree(good, tmp_path / "bad_code")
    with open(bad_code / "modeling_gpt.py", "a") as f:
        f.write("\ndef broken(:\n")  # a hand edit gone wrong
    for folder, message in ((tmp_path / "a_file", "is a file, not a model folder"),
                            (listed, "run_config.json holds a JSON list"),
                            (bad_code, "modeling_gpt.py is not valid Python")):
        code, err = run_cli(push_main, argv(folder), capsys)
        assert code == 2 and message in err, (folder, err)


@pytest.mark.parametrize("out", ["", ".", "..", "user_files"])
def test_save_never_replaces_what_is_not_a_model_folder(out, good, tmp_path, monkeypatch):
    """An empty or "." output path once replaced the current folder; a folder of the user's files is refused too."""
    work = tmp_path / "work"
    (work / "user_files").mkdir(parents=True)
    (work / "user_files" / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = digest(tmp_path)
    with pytest.raises(ModelFolderError, match="empty|current folder|not a model folder"):
        save_model_folder(mf.load_model(good), out)
    assert digest(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["work"]


def test_convert_refuses_an_empty_or_current_out(good, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for out in ("", "."):
        (tmp_path / "keep.txt").write_text("mine")
        code, err = run_cli(convert_main, ["--to-hf", str(good), "--out", out], capsys)
        assert code == 2 and "error: " in err, (out, err)
        assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_from_hf_gpt2_of_a_folder_loads_checked_and_in_eval_mode(stock_gpt2, broken):
    from gpt_scratch import from_hf_gpt2

    assert not from_hf_gpt2(str(stock_gpt2)).training  # as from_pretrained returns it: no dropout
    with pytest.raises(ModelFolderError, match="use --to-hf"):
        from_hf_gpt2(str(broken["weights with nan"]))  # a gpt_scratch folder, not GPT-2


KILLED_MID_SAVE = """
import sys, time
import torch
import gpt_scratch.folder.model_folder as mf
from gpt_scratch.folder.model_folder import quiet_transformers
from gpt_scratch import GPTConfig, GPTForCausalLM, save_model_folder

def stalled_tokenizer(out_dir, model_max_length):  # the weights are written; the save is half done
    print("WEIGHTS WRITTEN", flush=True)
    time.sleep(60)

mf.save_tokenizer = stalled_tokenizer
save_model_folder(GPTForCausalLM(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)), sys.argv[1])
"""


def test_kill_minus_9_mid_save_publishes_nothing(good, tmp_path):
    """A save killed after the weights were written: the old folder stays as it was, complete."""
    folder = tmp_path / "model"
    shutil.copytree(good, folder)
    before = digest(folder)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_SAVE, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        assert proc.stdout.readline().strip() == "WEIGHTS WRITTEN", proc.stderr.read()[-2000:]
        partial = [p for p in os.listdir(tmp_path) if p.startswith(".model.partial-")]
        assert len(partial) == 1 and "model.safetensors" in os.listdir(tmp_path / partial[0])
    finally:
        proc.kill()
        proc.communicate()
    assert digest(folder) == before
    mf.check_model_folder(folder)


# ---------------------------------------------------------------- every door gives the same verdict

SAME_VERDICT = {  # a damaged folder and what every reader must say about it
    "weights miss a tensor": "transformer.h.0.ln_1.weight",
    "weights have an extra tensor": "does not have: extra",
    "weights of another shape": "shapes that do not match config.json",
    "weights truncated": "not a complete safetensors file",
    "weights with nan": "holds non-finite values",
}


@pytest.mark.parametrize("case", list(SAME_VERDICT))
def test_every_reader_refuses_a_damaged_folder_the_same_way(case, broken, tmp_path, capsys, monkeypatch):
    """generate.py, push_to_hub.py, convert_gpt2.py, --init_from and from_pretrained of gpt_scratch's classes."""
    from gpt_scratch.folder.hub import main as push_main
    from gpt_scratch.train import main as train_main

    folder, verdict = str(broken[case]), SAME_VERDICT[case]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a push that got that far would say so
    corpus = tmp_path / "t.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 200)
    doors = {
        "generate.py": (generate_main, ["--model", folder, "--prompt", "Hi", "--max-new-tokens", "2"]),
        "push_to_hub.py": (push_main, ["--model", folder, "--repo-id", "alice/x", "--token", "hf_FAKEtoken1234567890"]),
        "convert_gpt2.py": (convert_main, ["--to-hf", folder, "--out", str(tmp_path / "out")]),
        "train.py": (train_main, ["--init_from", folder, "--data", str(corpus), "--out_dir", str(tmp_path / "run"),
                                  "--block_size", "16", "--max_steps", "1"]),
    }
    for name, (main, argv) in doors.items():
        code, err = run_cli(main, argv, capsys)
        assert code == 2 and err.startswith(f"{name}: error: ") and verdict in err, (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    # the Python API: the package's class and transformers' Auto class (which calls it) raise the same ValueError
    for cls in (GPTForCausalLM, AutoModelForCausalLM):
        with pytest.raises(ModelFolderError, match=re.escape(verdict)):
            cls.from_pretrained(folder)


@pytest.mark.parametrize("case", ["weights miss a tensor", "weights of another shape"])
def test_from_pretrained_keeps_transformers_opt_outs(case, broken):
    """A caller that asks for the loading report judges it; ignore_mismatched_sizes=True re-initialises as documented."""
    kwargs = {"output_loading_info": True} if case.endswith("tensor") else {"ignore_mismatched_sizes": True}
    with quiet_transformers():
        got = GPTForCausalLM.from_pretrained(broken[case], **kwargs)
    if case.endswith("tensor"):
        assert got[1]["missing_keys"] == {"transformer.h.0.ln_1.weight"}
    else:
        assert got.config.n_embd == 32 and got.transformer.wte.weight.shape[1] == 32
