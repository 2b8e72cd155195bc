"""Model card and push_to_hub, against a loopback Hub (tests/hub_server.py); nothing reaches the internet.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once at import, so every push
and every download runs in a subprocess whose environment points at the fake Hub.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from gpt_scratch import GPTConfig, GPTForCausalLM, load_tokenizer, save_model_folder
from gpt_scratch.folder.card import render_model_card, write_model_card

from hub_server import FakeHub
from test_training import _fresh_accelerate_state, corpus, tiny_args  # noqa: F401  (fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "hf_FAKEtoken1234567890"
REPO_ID = "alice/tiny-gpt"
IDS = [[464, 2068, 7586, 21831, 18045]]
PROMPT = "Hello world"
SUMMARY = {"data": "tiny Shakespeare (a local copy, `input.txt`); 338,025 GPT-2 tokens", "dataset_id": "tiny_shakespeare",
           "language": "en", "steps": 25, "tokens": 26624, "val_loss": 6.2512345678, "val_bpb": 2.9180123,
           "val_perplexity": 518.6402, "hardware": "CPU: Test CPU 9000, 2 cores", "strategy": "single process on cpu",
           "precision": "fp32", "init_from": None}
RUN_CONFIG = {"data": None, "max_steps": 25, "batch_size": 8, "block_size": 64, "learning_rate": 1e-3,
              "out_dir": "/home/alice/secret-project/out", "cache_dir": "/home/alice/cache", "cpu": False}
MODEL_FILES = ["README.md", "config.json", "generation_config.json", "loss.png", "model.safetensors",
               "tokenizer.json", "tokenizer_config.json"]


def allowlist(folder):
    """The files a push must upload: the model files plus the remote code save_pretrained copied
    (modeling_gpt.py, configuration_gpt.py and the sibling modules they import)."""
    code = [f for f in os.listdir(folder) if f.endswith(".py")]
    assert {"modeling_gpt.py", "configuration_gpt.py"} <= set(code)
    return sorted(MODEL_FILES + code)


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 0.5)  # so greedy text is not one token repeated
    return model


@pytest.fixture(scope="module")
def saved_folder(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "model"
    save_model_folder(tiny_model, out)
    return out


def make_run_folder(saved, dest, summary=SUMMARY, run_config=RUN_CONFIG):
    """A training output folder: the model plus what a run leaves beside it, which must not be uploaded."""
    shutil.copytree(saved, dest)
    if summary is not None:
        (dest / "run_summary.json").write_text(json.dumps(summary))
    if run_config is not None:
        (dest / "run_config.json").write_text(json.dumps(run_config))
    (dest / "metrics.jsonl").write_text(json.dumps({"step": 25, "train_loss": 5.9}) + "\n")
    (dest / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\nfake plot")
    (dest / "checkpoint-5").mkdir()
    (dest / "checkpoint-5" / "model.safetensors").write_bytes(b"old weights")
    (dest / "optimizer.pt").write_bytes(b"optimizer state")
    (dest / "train.log").write_text("step 0 loss 10.9\n")
    return dest


def tree_digest(folder):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def files_containing(folder, needle):
    hits = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    if needle.encode() in f.read():
                        hits.append(path)
    return hits


def child_env(hf_home, endpoint, token=TOKEN):
    """A child that may talk to `endpoint` only: conftest's offline switches are removed on purpose."""
    # HF_* and HUGGING_FACE_* go: HF_TOKEN_PATH or a real token of the user's must not leak in.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TRANSFORMERS_OFFLINE") and not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def card_metadata(text):
    return yaml.safe_load(text.split("---\n")[1])


# ---------------------------------------------------------------- the card, locally

def test_card_facts_come_from_the_run(saved_folder, tiny_model, tmp_path):
    folder = make_run_folder(saved_folder, tmp_path / "run")
    card = ModelCard.load(write_model_card(folder, where=REPO_ID))
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "mit" and meta["datasets"] == ["tiny_shakespeare"] and meta["language"] == ["en"]
    assert {"gpt2", "gpt_scratch", "text-generation", "custom_code"} <= set(meta["tags"])
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"loss": SUMMARY["val_loss"], "bits_per_byte": SUMMARY["val_bpb"],
                       "perplexity": SUMMARY["val_perplexity"]}
    n_params = sum(p.numel() for p in tiny_model.parameters())  # the tied embedding counted once
    text = card.text
    assert f"| Parameters | {n_params:,}" in text
    for row in ("| Layers | 2 |", "| Attention heads | 2 |", "| Width (n_embd) | 32 |",
                "| Context (block_size) | 64 tokens |", "| Vocabulary | 50,257"):
        assert row in text, row
    assert "- Data: tiny Shakespeare (a local copy, `input.txt`); 338,025 GPT-2 tokens" in text
    assert "Optimizer steps: 25" in text and "Tokens seen: 26,624" in text
    assert "6.2512 nats per token, 2.9180 bits per byte (perplexity 518.64) after step 25" in text
    assert "- Hardware: CPU: Test CPU 9000, 2 cores" in text and "- Run: single process on cpu; precision: fp32" in text
    assert "![Training and validation loss](loss.png)" in text
    assert f'repo = "{REPO_ID}"' in text and "trust_remote_code=True" in text and "pipeline(" in text
    assert "secret-project" not in text and "/home/alice" not in text  # path-like settings stay private
    assert "| cpu |" not in text  # `cpu | False` on a CPU run said the opposite


def test_card_without_facts_says_not_recorded(saved_folder, tmp_path):
    folder = make_run_folder(saved_folder, tmp_path / "run", summary=None, run_config=None)
    (folder / "loss.png").unlink()
    text = render_model_card(folder)
    meta = card_metadata(text)
    assert "model-index" not in meta and "datasets" not in meta
    for line in ("Data: not recorded", "Optimizer steps: not recorded", "Tokens seen: not recorded",
                 "Final validation loss: not recorded", "Hardware: not recorded"):
        assert line in text, line
    assert "loss.png" not in text
    assert f'repo = "{folder}"' in text  # the folder itself, where it is
    assert not (folder / "README.md").exists()  # render only; write_model_card writes


@pytest.mark.parametrize("source", ["text", "parquet"])
def test_a_trained_card_names_the_real_folder_and_the_data(source, tmp_path, corpus):  # noqa: F811
    from gpt_scratch.train import main as train_main

    if source == "parquet":
        import datasets

        text = open(corpus).read().split("\n\n")
        datasets.Dataset.from_dict({"body": text}).to_parquet(str(tmp_path / "corpus.parquet"))
        over = dict(data=None, dataset=str(tmp_path / "corpus.parquet"), text_column="body")
    else:
        over = {}
    out = tmp_path / "run"
    train_main(tiny_args(corpus, out, max_steps=2, eval_interval=0, save_interval=0, **over))
    card = (out / "model" / "README.md").read_text()
    assert f'repo = "{out / "model"}"' in card and f'model="{out / "model"}"' in card  # the folder it became
    assert ".partial" not in card
    want = "a local parquet file, `corpus.parquet`, column `body`" if source == "parquet" else "a local text file, `play.txt`"
    assert f"- Data: {want}; " in card
    assert "Shakespeare" not in card and "tiny_shakespeare" not in card  # nothing guessed
    assert "bits per byte" in card and "Optimizer steps: 2" in card


def test_readme_share_commands_run_as_printed(saved_folder, tmp_path, monkeypatch, capsys):
    """README's Hub block: `hf auth login` exists in the installed huggingface_hub, and the push line's
    options reach push_to_hub as meant (the push itself is tested against the loopback Hub below)."""
    import types

    import gpt_scratch.folder.hub as hub
    from readme_commands import readme_commands

    (login, _), (push, _) = readme_commands("Share on the Hub")
    assert login == ["hf", "auth", "login"]
    hf = shutil.which("hf")
    cmd = [hf] if hf else [sys.executable, "-m", "huggingface_hub.cli.hf"]
    res = subprocess.run(cmd + login[1:] + ["--help"], capture_output=True, text=True, timeout=120,
                         env=child_env(tmp_path / "hf_home", "http://127.0.0.1:9", token=None))
    assert res.returncode == 0 and "Usage: hf auth login" in res.stdout, res.stdout + res.stderr

    shutil.copytree(saved_folder, tmp_path / "out" / "shakespeare" / "model")
    monkeypatch.chdir(tmp_path)
    seen = {}

    def fake_push(model_dir, repo_id, **kw):
        seen.update(model_dir=model_dir, repo_id=repo_id, private=kw["private"])
        return types.SimpleNamespace(repo_url=f"https://hub/{repo_id}", oid="0" * 40)

    monkeypatch.setattr(hub, "push_to_hub", fake_push)
    assert push[:2] == ["python", "scripts/push_to_hub.py"]
    hub.main([a.strip("[]") for a in push[2:]])  # [--private]: the optional flag, given
    assert seen == {"model_dir": "out/shakespeare/model", "repo_id": "you/gpt-shakespeare", "private": True}
    assert "you/gpt-shakespeare" in capsys.readouterr().out


# ---------------------------------------------------------------- push + load through the fake Hub

LOAD_SCRIPT = textwrap.dedent(
    """
    import sys, json
    sys.modules["gpt_scratch"] = None  # only the Hub's copy of the code may be used
    try:
        import gpt_scratch
    except ImportError:
        pass
    else:
        raise SystemExit("gpt_scratch is importable: the test would prove nothing")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    repo, ids, prompt = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    m = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True).eval()
    assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
    tok = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    pipe = pipeline("text-generation", model=repo, trust_remote_code=True)
    with torch.no_grad():
        logits = m(torch.tensor(ids)).logits[0, -1].tolist()
        pipe_logits = pipe.model(torch.tensor(ids)).logits[0, -1].tolist()
    text = pipe(prompt, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    print(json.dumps({"logits": logits, "pipe_logits": pipe_logits, "ids": tok(prompt)["input_ids"], "text": text}))
    """
)


def test_push_uploads_allowlist_and_loads_from_the_hub(saved_folder, tiny_model, tmp_path):
    folder = make_run_folder(saved_folder, tmp_path / "run")
    before = tree_digest(folder)
    with FakeHub(TOKEN) as hub:
        push = subprocess.run(
            [sys.executable, os.path.join(REPO, "scripts", "push_to_hub.py"), "--model", str(folder),
             "--repo-id", REPO_ID, "--private", "--commit-message", "first upload"],
            env=child_env(tmp_path / "hf_home_push", hub.url), capture_output=True, text=True, timeout=300,
            cwd=tmp_path,
        )
        assert push.returncode == 0, push.stderr[-3000:]
        repo = hub.repos[REPO_ID]
        assert sorted(repo.files) == allowlist(saved_folder)
        assert repo.commits[-1]["summary"] == "first upload"
        create = next(r for r in hub.requests if r["path"] == "/api/repos/create")
        assert create["body"]["visibility"] == "private"
        writes = [r for r in hub.requests if r["method"] == "POST"]
        assert writes and all(r["auth"] == f"Bearer {TOKEN}" for r in writes)

        for name in allowlist(saved_folder):
            if name != "README.md":
                assert repo.files[name] == (folder / name).read_bytes(), name
        card = repo.files["README.md"].decode()
        meta = card_metadata(card)
        metrics = meta["model-index"][0]["results"][0]["metrics"]
        assert {m["type"]: m["value"] for m in metrics} == {"loss": SUMMARY["val_loss"], "bits_per_byte": SUMMARY["val_bpb"],
                                                          "perplexity": SUMMARY["val_perplexity"]}
        assert "Optimizer steps: 25" in card and "Tokens seen: 26,624" in card

        script = tmp_path / "scripts" / "load.py"
        script.parent.mkdir()
        script.write_text(LOAD_SCRIPT)
        load = subprocess.run(
            [sys.executable, "-I", str(script), REPO_ID, json.dumps(IDS), PROMPT],
            env=child_env(tmp_path / "hf_home_load", hub.url), capture_output=True, text=True, timeout=300,
            cwd=tmp_path, stdin=subprocess.DEVNULL,
        )
        assert load.returncode == 0, load.stderr[-3000:]
        downloads = {r["path"].rsplit("/", 1)[-1] for r in hub.requests
                     if r["method"] == "GET" and "/resolve/" in r["path"]}
        assert {"model.safetensors", "modeling_gpt.py", "tokenizer.json"} <= downloads

    got = json.loads(load.stdout.strip().splitlines()[-1])
    x = torch.tensor(IDS)
    with torch.no_grad():
        ref = tiny_model(x).logits[0, -1]
    assert (torch.tensor(got["logits"]) - ref).abs().max() < 1e-5
    assert (torch.tensor(got["pipe_logits"]) - ref).abs().max() < 1e-5
    local_tok = load_tokenizer(model_max_length=64)
    assert got["ids"] == local_tok(PROMPT)["input_ids"]
    prompt_ids = torch.tensor([got["ids"]])
    with torch.no_grad():
        greedy = tiny_model.generate(prompt_ids, max_new_tokens=6, do_sample=False)
    assert got["text"] == local_tok.decode(greedy[0])

    # The token went over the wire only: in no file written locally, nowhere in the output.
    assert tree_digest(folder) == before  # the card was refreshed in memory, not on disk
    assert files_containing(tmp_path, TOKEN) == []
    for out in (push.stdout, push.stderr, load.stdout, load.stderr):
        assert TOKEN not in out


ERRORS_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from gpt_scratch.errors import HubError
    from gpt_scratch.folder.hub import main, push_to_hub
    results = {}
    for name, case in json.loads(sys.argv[1]).items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                if "argv" in case:
                    main(case["argv"])  # the command line, as scripts/push_to_hub.py runs it
                else:
                    for _ in range(case.pop("times", 1)):
                        push_to_hub(**case)
                code = 0
            except SystemExit as e:
                code = e.code
            except HubError as e:
                code, _ = "HubError", err.write(str(e))
        results[name] = {"code": code, "stderr": err.getvalue()}
    print(json.dumps(results))
    """
)


def test_push_errors_are_clear_and_change_nothing(saved_folder, tmp_path):
    folder = make_run_folder(saved_folder, tmp_path / "run")
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    before = {p: tree_digest(p) for p in (folder, not_a_model)}
    with FakeHub(TOKEN) as hub:  # started and stopped: its port is now closed
        closed = hub.url
    run = ["--model", str(folder), "--repo-id", REPO_ID]
    cases = {
        "no_token": {"argv": run},
        "bad_repo_id": {"argv": ["--model", str(folder), "--repo-id", "alice/bad name!", "--token", TOKEN]},
        "bare_name": {"argv": ["--model", str(folder), "--repo-id", "tiny-gpt", "--token", TOKEN]},
        "not_a_model": {"argv": ["--model", str(not_a_model), "--repo-id", REPO_ID, "--token", TOKEN]},
        "missing_folder": {"argv": ["--model", str(tmp_path / "nope"), "--repo-id", REPO_ID, "--token", TOKEN]},
        "server_down": {"argv": run + ["--token", TOKEN]},  # HF_ENDPOINT is the closed port
    }
    hf_home = tmp_path / "hf_home_empty"
    hf_home.mkdir()
    with FakeHub(TOKEN) as live:
        call = dict(model_dir=str(folder), repo_id=REPO_ID, endpoint=live.url)
        cases["wrong_token"] = dict(call, token="hf_WRONGtoken0987654321")
        cases["repush"] = dict(call, token=TOKEN, times=2)  # the second push finds the repo there (409)
        proc = subprocess.run(
            [sys.executable, "-c", ERRORS_SCRIPT, json.dumps(cases)], env=child_env(hf_home, closed, token=None),
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in res.items():
        assert "Traceback" not in r["stderr"], (name, r["stderr"])
        assert TOKEN not in r["stderr"], name
    assert res["no_token"]["code"] == 2
    assert all(s in res["no_token"]["stderr"] for s in ("`hf auth login`", "HF_TOKEN", "--token"))
    for name, bad in (("bad_repo_id", "alice/bad name!"), ("bare_name", "tiny-gpt")):
        assert res[name]["code"] == 2
        assert "user/name" in res[name]["stderr"] and repr(bad) in res[name]["stderr"]
    assert res["not_a_model"]["code"] == 2
    assert "has no config.json, so it is not a saved model" in res["not_a_model"]["stderr"]
    assert "save_model_folder" in res["not_a_model"]["stderr"]
    assert res["missing_folder"]["code"] == 2 and "does not exist" in res["missing_folder"]["stderr"]
    assert res["server_down"]["code"] == 1
    assert f"cannot reach the Hub at {closed}" in res["server_down"]["stderr"]
    assert res["wrong_token"]["code"] == "HubError"
    assert f"at {live.url} failed: HTTP 401" in res["wrong_token"]["stderr"]
    assert "hf_WRONGtoken0987654321" not in res["wrong_token"]["stderr"]
    assert res["repush"]["code"] == 0 and len(live.repos[REPO_ID].commits) == 2
    assert sorted(live.repos[REPO_ID].files) == allowlist(saved_folder)

    assert {p: tree_digest(p) for p in (folder, not_a_model)} == before
    assert files_containing(tmp_path, TOKEN) == []
    assert TOKEN not in proc.stdout + proc.stderr
