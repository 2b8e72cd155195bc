import json
import os

import pytest

from gpt_scratch import tokenizer as tk

TRICKY = [
    "",
    "Hello, world!",
    "héllo wörld, café crème brûlée, naïve Ångström",
    "e\u0301 (e + combining acute) vs \u00e9",
    "日本語のテキストと中文文本，한국어도",
    "emoji 😀🎉 and ZWJ 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 👍🏽",
    "runs    of     spaces",
    "trailing spaces   ",
    "   leading spaces",
    "line one\r\nline two\r\n",
    "\ttabs\t\tand\t \tmixes\n\n\n",
    "before<|endoftext|>after <|endoftext|> <|endoftext|><|endoftext|>",
    "<|endoftext|>",
    "digits 0 12 345 6789 1234567890 3.14159 1,000,000",
    "I'll've, we'd, you're, they've, it's, I'M, 'tis",
    "  \n\n  x \n ",
    "\x00\x01\x7f control bytes",
]


@pytest.fixture(scope="module")
def hf_tok():
    return tk.load_tokenizer()


@pytest.fixture(scope="module")
def tt_enc():
    return tk.load_tiktoken()


def test_merges_and_vocab_sizes(hf_tok):
    vocab, merges = tk._vocab_and_merges()
    assert len(merges) == 50_000
    assert len(vocab) == tk.VOCAB_SIZE == 50_257
    assert len(hf_tok) == 50_257
    # GPT-2's merges.txt famously starts with these (Ġ is the stand-in for a space).
    assert merges[:4] == (("Ġ", "t"), ("Ġ", "a"), ("h", "e"), ("i", "n"))


def test_special_tokens_and_settings(hf_tok):
    assert hf_tok.is_fast
    assert hf_tok.convert_tokens_to_ids(tk.EOT_TOKEN) == tk.EOT_ID
    for name in ("bos", "eos", "unk", "pad"):
        assert getattr(hf_tok, f"{name}_token") == tk.EOT_TOKEN
        assert getattr(hf_tok, f"{name}_token_id") == tk.EOT_ID
    assert hf_tok.padding_side == "left"
    assert hf_tok.model_max_length == 1024
    assert tk.load_tokenizer(model_max_length=256).model_max_length == 256


@pytest.mark.parametrize("text", TRICKY)
def test_ids_match_tiktoken_and_round_trip(hf_tok, tt_enc, text):
    want = tt_enc.encode(text, allowed_special="all")
    # Default call: no BOS/EOS may be added, so ids must equal tiktoken's exactly.
    got = hf_tok(text)["input_ids"]
    assert got == want
    assert hf_tok.encode(text) == want
    assert hf_tok.decode(got) == text


def test_shakespeare_matches_tiktoken(hf_tok, tt_enc, shakespeare_path):
    with open(shakespeare_path, encoding="utf-8") as f:
        text = f.read()
    want = tt_enc.encode(text, allowed_special="all")
    assert len(want) == 338_025
    got = hf_tok(text, verbose=False)["input_ids"]  # verbose=False: the >1024 warning is expected
    assert len(got) == 338_025
    assert got == want
    assert hf_tok.decode(got) == text


def test_left_padding_uses_eot(hf_tok):
    batch = hf_tok(["a", "hello there"], padding=True)
    assert batch["input_ids"][0][0] == tk.EOT_ID
    assert batch["attention_mask"] == [[0, 1], [1, 1]]


def test_save_and_autotokenizer_reload(tmp_path, hf_tok, tt_enc):
    from transformers import AutoTokenizer

    out = tmp_path / "tok"
    tk.save_tokenizer(str(out), model_max_length=2048)
    assert (out / "tokenizer.json").is_file()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 2048
    assert config["padding_side"] == "left"

    loaded = AutoTokenizer.from_pretrained(str(out))
    assert loaded.is_fast
    assert loaded.pad_token_id == loaded.eos_token_id == loaded.bos_token_id == tk.EOT_ID
    assert loaded.padding_side == "left"
    assert loaded.model_max_length == 2048
    assert len(loaded) == tk.VOCAB_SIZE
    for text in TRICKY:
        want = tt_enc.encode(text, allowed_special="all")
        assert loaded(text)["input_ids"] == want
        assert loaded.decode(want) == text


def test_corrupt_ranks_file_raises(tmp_path, monkeypatch):
    data = bytearray(open(tk.RANKS_PATH, "rb").read())
    data[100] ^= 0x01  # one flipped bit must be caught
    bad = tmp_path / "r50k_base.tiktoken"
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(tk, "RANKS_PATH", str(bad))
    # All three are cached, so clear them or the good file's result would be reused.
    tk._ranks.cache_clear()
    tk.load_tiktoken.cache_clear()
    tk._vocab_and_merges.cache_clear()
    from gpt_scratch.errors import EnvironmentFault

    try:
        # The installation, not the user's input: exit 1 from a command line, with the fix.
        with pytest.raises(EnvironmentFault, match="corrupt.*reinstall"):
            tk.load_tiktoken()
        with pytest.raises(EnvironmentFault, match="corrupt"):
            tk.load_tokenizer()
        monkeypatch.setattr(tk, "RANKS_PATH", str(tmp_path / "missing.tiktoken"))
        with pytest.raises(EnvironmentFault, match="cannot read .*missing.tiktoken.*reinstall"):
            tk.load_tiktoken()
    finally:
        # Nothing was cached (the calls raised), but be explicit for later tests.
        tk._ranks.cache_clear()
        tk.load_tiktoken.cache_clear()
        tk._vocab_and_merges.cache_clear()
