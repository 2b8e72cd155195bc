import os
import sys

import pytest
import torch

# On a loaded 2-core machine, 2 threads on tiny ops was seen ~50x slower than 1.
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
SHAKESPEARE = os.path.join(SHARED_DATA, "tinyshakespeare.txt")

# First lines of every script that loads a saved folder with trust_remote_code in a clean
# subprocess: gpt_scratch is made unimportable, so only the folder's own code can load it.
WITHOUT_GPT_SCRATCH = """\
import sys, json
sys.modules["gpt_scratch"] = None  # the editable install must not be reachable
try:
    import gpt_scratch
except ImportError:
    pass
else:
    raise SystemExit("gpt_scratch is importable: the test would prove nothing")
"""


@pytest.fixture
def shakespeare_path():
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"{SHAKESPEARE} not present (it lives in ../shared/data beside the checkout)")
    return SHAKESPEARE


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch, tmp_path_factory):
    # Nothing here may reach the Hub; keep HF caches out of the user's home.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# transformers' common tests (test_transformers_common.py) run on gpt_scratch and on GPT-2.
# Their counts are printed side by side; a test GPT-2 passes that gpt_scratch skips or fails
# fails the run.
COMMON_CLASSES = {"GPTScratchCommonTest": "gpt_scratch", "GPT2ReferenceCommonTest": "GPT-2", "BigramCommonTest": "bigram"}
_common_outcomes = {}


def pytest_runtest_logreport(report):
    parts = report.nodeid.split("::")
    if len(parts) < 3 or parts[-2] not in COMMON_CLASSES:
        return
    if report.when == "call" or report.outcome != "passed":  # setup skips/errors count too
        _common_outcomes.setdefault(parts[-2], {})[parts[-1]] = report.outcome


def _both_ran():
    return "GPTScratchCommonTest" in _common_outcomes and "GPT2ReferenceCommonTest" in _common_outcomes


def _common_gaps():
    ours = _common_outcomes.get("GPTScratchCommonTest", {})
    ref = _common_outcomes.get("GPT2ReferenceCommonTest", {})
    return sorted(name for name, outcome in ref.items() if outcome == "passed" and ours.get(name) != "passed")


def pytest_terminal_summary(terminalreporter):
    if not _common_outcomes:
        return
    tr = terminalreporter
    tr.section("transformers common model tests")
    for cls, label in COMMON_CLASSES.items():
        if cls not in _common_outcomes:
            continue
        outcomes = list(_common_outcomes[cls].values())
        counts = {k: outcomes.count(k) for k in ("passed", "failed", "skipped")}
        tr.write_line(f"{label:12s} {counts['passed']} passed, {counts['failed']} failed, "
                      f"{counts['skipped']} skipped of {len(outcomes)}")
    gaps = _common_gaps()
    if gaps and _both_ran():
        tr.write_line("passed for GPT-2 but not for gpt_scratch: " + ", ".join(gaps))


def pytest_sessionfinish(session, exitstatus):
    if _both_ran() and _common_gaps() and exitstatus == 0:
        session.exitstatus = 1


def pytest_configure(config):
    # transformers' common tests carry marks of its own CI (flash_attn_test, torch_compile_test, ...)
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnknownMarkWarning")


# A model folder as users get one: trained by the training command line on tiny Shakespeare
# (2 layers, width 64, 60 steps; ~25 s on one core). Shared by the tests of what consumes
# such folders (other transformers releases, vLLM, llama.cpp's converter).
TRAINED_ARGS = ["--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "64", "--max_steps", "60",
                "--batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "5", "--eval_interval", "60",
                "--eval_steps", "2", "--save_interval", "0", "--sample_tokens", "0", "--cpu_threads", "1"]


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    import subprocess

    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"{SHAKESPEARE} not present (it lives in ../shared/data beside the checkout)")
    out = tmp_path_factory.mktemp("trained") / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               GPT_SCRATCH_CACHE=str(out.parent / "cache"))
    cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--data", SHAKESPEARE, "--out_dir", str(out),
           *TRAINED_ARGS]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(out / "model")


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory):
    """A random GPT-2-vocabulary model of wide weights (wide_weights.widen), saved as a complete folder: its
    greedy text changes at every token, so a wrong position, mask or cache slot shows (a briefly trained
    model's text repeats itself). Head size 32: vLLM's CPU attention has no kernel for 16."""
    from gpt_scratch import GPTConfig, GPTForCausalLM, save_model_folder
    from wide_weights import widen

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wide") / "model"
    save_model_folder(widen(GPTForCausalLM(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64))), folder)
    return str(folder)


def built_or_skip(build, *args):
    """What an extra_envs.py builder returns; where PyPI cannot be reached, a skip outside CI (a failure in it)."""
    try:
        return build(*args)
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
