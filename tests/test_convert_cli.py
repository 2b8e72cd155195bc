"""scripts/convert_gpt2.py end to end: both directions, run as a user would."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from gpt_scratch import GPTForCausalLM
from gpt_scratch.convert import main

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
    assert e.value.code == 2 and "config.json" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "config.json").write_text("{}")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(SystemExit) as e:
        main(["--from-hf", str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "already holds a model" in capsys.readouterr().err
    assert (tmp_path / "o" / "config.json").read_text() == "{}"
