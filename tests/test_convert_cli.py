"""scripts/convert_gpt2.py end to end: both directions, run as a user would."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from gpt_scratch import GPTForCausalLM
from gpt_scratch.folder.convert import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_convert_both_ways_keeps_logits(tmp_path):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    hf.save_pretrained(tmp_path / "hf")
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "convert_gpt2.py"), "--from-hf", str(tmp_path / "hf"),
         "--out", str(tmp_path / "ours")],
        check=True, env=env, capture_output=True, timeout=300,
    )
    ours = GPTForCausalLM.from_pretrained(tmp_path / "ours").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "ours")
    x = torch.tensor([tok.encode("To be, or not to be")])
    with torch.no_grad():
        assert (ours(x).logits - hf(x).logits).abs().max() < 1e-4
    main(["--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "back")])
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert (back(x).logits - hf(x).logits).abs().max() < 1e-4
    assert AutoTokenizer.from_pretrained(tmp_path / "back").encode("To be") == tok.encode("To be")


def test_convert_refuses_to_overwrite_and_missing_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--from-hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "nope' does not exist" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "config.json").write_text("{}")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(SystemExit) as e:
        main(["--from-hf", str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "nothing is overwritten" in capsys.readouterr().err
    assert (tmp_path / "o" / "config.json").read_text() == "{}"


def test_readme_convert_commands_run_as_printed(tmp_path, monkeypatch, capsys):
    """README's Convert block, word for word, where path/to/gpt2 and out/shakespeare/model exist."""
    from readme_commands import readme_commands

    from gpt_scratch import GPTConfig, save_model_folder
    from gpt_scratch.folder.model_folder import check_model_folder

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=1, n_head=4)).save_pretrained(
        tmp_path / "path" / "to" / "gpt2")
    save_model_folder(GPTForCausalLM(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64)),
                      tmp_path / "out" / "shakespeare" / "model")
    monkeypatch.chdir(tmp_path)
    commands = readme_commands("Convert GPT-2 weights")
    assert len(commands) == 2
    for argv, _ in commands:
        assert argv[:2] == ["python", "scripts/convert_gpt2.py"], argv
        assert main(argv[2:]) == 0
        assert capsys.readouterr().out == f"wrote {argv[-1]}\n"
    assert check_model_folder("gpt2-scratch").config.model_type == "gpt_scratch"
    _, info = GPT2LMHeadModel.from_pretrained("shakespeare-hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
