"""--init_from: fine-tuning starts from a transformers GPT-2 (or a gpt_scratch folder) with the same logits."""

import json
import os

import pytest
import torch

from gpt_scratch.errors import ConfigError
from gpt_scratch.train import TrainConfig
from gpt_scratch.train import main as train_main
from gpt_scratch.train.loop import build_model

from test_training import _fresh_accelerate_state, corpus, records, run_train, tiny_args  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 saved by transformers itself (random weights, GPT-2's vocabulary)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2))
    path = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    hf.save_pretrained(path)
    return str(path)


def test_started_model_has_the_gpt2_logits(gpt2_folder):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    ours = build_model(TrainConfig(init_from=gpt2_folder, block_size=16, dropout=0.1)).eval()
    assert ours.config.block_size == 16 and ours.config.n_layer == 2 and ours.config.dropout == 0.1
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(input_ids=ids).logits
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    with pytest.raises(ConfigError, match="longer than init_from"):
        build_model(TrainConfig(init_from=gpt2_folder, block_size=128))


def test_fine_tuning_from_a_gpt2_folder_lowers_the_loss(tmp_path, corpus, gpt2_folder):  # noqa: F811
    out = tmp_path / "ft"
    p = run_train(tiny_args(corpus, out, init_from=gpt2_folder, n_layer=4, n_embd=64, max_steps=12,
                            learning_rate=3e-3, min_lr=3e-3, warmup_steps=0, eval_interval=0, save_interval=0,
                            dropout=0.0))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "init_from" in p.stdout and "2 layers" in p.stdout
    losses = [r["train_loss"] for r in records(out) if "train_loss" in r]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    run_cfg = json.load(open(out / "model" / "run_config.json"))
    assert (run_cfg["n_layer"], run_cfg["n_embd"]) == (2, 32)  # the pretrained shape, not the flags'
    # and the exported gpt_scratch folder is itself a valid --init_from
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    again = build_model(TrainConfig(init_from=str(out / "model"), block_size=16)).eval()
    ids = torch.arange(16).unsqueeze(0)
    with torch.no_grad():
        a, b = exported(input_ids=ids).logits, again(input_ids=ids).logits
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_hub_id_offline_and_bad_folders_are_errors(tmp_path, corpus, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as e:  # HF_HUB_OFFLINE=1 (conftest), empty cache
        train_main(tiny_args(corpus, tmp_path / "o", init_from="openai-community/gpt2"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "init_from 'openai-community/gpt2'" in err and "Hub id" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, tmp_path / "o", init_from=str(tmp_path / "empty")))
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(tiny_args(corpus, tmp_path / "o", init_from=str(tmp_path / "nope")))
    assert "is not a folder" in capsys.readouterr().err


def test_readme_finetune_commands_run_as_printed(tmp_path, corpus):  # noqa: F811
    """The README's fine-tuning lines with their config files unchanged (steps and size shrunk, the text given
    offline); --init_from with the main job's config takes the full vocabulary by itself (train_vocab auto)."""
    import shutil
    import subprocess
    import sys

    from transformers import GPT2Config, GPT2LMHeadModel

    from readme_commands import TINY, readme_commands, workdir
    from test_training import child_env

    work = workdir(tmp_path)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(
        work / "path" / "to" / "gpt2-folder")
    env = dict(child_env(), GPT_SCRATCH_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))

    def run(argv):
        return subprocess.run([sys.executable] + argv[1:] + TINY + ["--data", corpus], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    hub, folder, more = (argv for argv, _ in readme_commands("Fine-tune from GPT-2"))
    p = run(hub)  # OpenAI's GPT-2 from the Hub: offline, a clear refusal
    assert p.returncode == 2 and "init_from 'openai-community/gpt2'" in p.stderr and "Traceback" not in p.stderr
    p = run(folder)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.load(open(work / "out" / "finetune-shakespeare" / "model" / "run_config.json"))["n_layer"] == 2
    shutil.rmtree(work / "out" / "shakespeare", ignore_errors=True)
    p = run(["python", "scripts/train.py", "--config", "configs/shakespeare.yaml"])  # the main job, tiny
    assert p.returncode == 0, p.stderr[-3000:]
    p = run(more)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "train_vocab" not in p.stdout  # the full vocabulary: the pretrained rows are kept
    assert (work / "out" / "shakespeare-more" / "model" / "model.safetensors").is_file()
