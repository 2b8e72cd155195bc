"""The bigram baseline: same transformers contracts as the GPT (save/load, generate, remote code, loss)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import WITHOUT_GPT_SCRATCH
from wide_weights import argmax_loop
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from gpt_scratch import BigramConfig, BigramForCausalLM
from gpt_scratch.transformers_compat import cache_of

V = 97  # a small vocabulary keeps these tests fast


def tiny_config(**kw):
    args = dict(vocab_size=V, n_embd=16, block_size=32, bos_token_id=V - 1, eos_token_id=V - 1)
    args.update(kw)
    return BigramConfig(**args)


def wide_model(seed=0, **kw):
    """Large random weights so greedy decoding wanders. Untied: a tied bigram's table is
    wte @ wte.T, whose diagonal dominates at random init, so greedy would repeat one token."""
    torch.manual_seed(seed)
    kw.setdefault("tie_word_embeddings", False)
    model = BigramForCausalLM(tiny_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


# ---------------------------------------------------------------- config

@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_embd=0), "n_embd"),
        (dict(n_embd="16"), "n_embd"),
        (dict(block_size=-1), "block_size"),
        (dict(block_size=True), "block_size"),
        (dict(initializer_range=0.0), "initializer_range"),
        (dict(eos_token_id=V), "eos_token_id"),
    ],
)
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**kw)


def test_config_defaults_and_model_shape():
    c = BigramConfig()
    assert (c.vocab_size, c.n_embd, c.block_size) == (50257, 256, 1024)
    assert c.tie_word_embeddings and c.use_cache and c.bos_token_id == c.eos_token_id == 50256
    assert c.pad_token_id is None and c.model_type == "gpt_scratch_bigram"
    assert (c.hidden_size, c.max_position_embeddings) == (256, 1024)
    m = BigramForCausalLM(tiny_config())
    assert m.lm_head.weight is m.wte.weight
    assert sum(p.numel() for p in m.parameters()) == V * 16  # one shared table, no biases


# ---------------------------------------------------------------- forward contracts

def test_logits_depend_only_on_current_token():
    model = wide_model()
    x = torch.tensor([[5, 9, 5, 3, 9]])
    with torch.no_grad():
        logits = model(x).logits[0]
        assert torch.equal(logits[0], logits[2]) and torch.equal(logits[1], logits[4])
        assert torch.allclose(logits[3], model(torch.tensor([[3]])).logits[0, 0], atol=1e-5)


def test_logits_to_keep_loss_and_cache_names():
    model = wide_model()
    x = torch.randint(0, V, (2, 12))
    labels = x.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        out = model(x, labels=labels)
        last = model(x, logits_to_keep=1).logits
        out_new = model(x[:, :7], use_cache=True)
        assert isinstance(cache_of(out_new), DynamicCache) and cache_of(out_new).get_seq_length() == 7
        step_new = model(x[:, 7:], cache=cache_of(out_new))  # extends that same cache
        step_old = model(x[:, 7:], past_key_values=cache_of(model(x[:, :7], use_cache=True)))
    assert last.shape == (2, 1, V) and torch.allclose(last[:, 0], out.logits[:, -1], atol=1e-5)
    ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, ref, atol=1e-5)
    assert cache_of(step_new).get_seq_length() == 12
    assert torch.allclose(step_new.logits, out.logits[:, 7:], atol=1e-5)
    assert torch.allclose(step_old.logits, out.logits[:, 7:], atol=1e-5)


def test_input_checks():
    model = wide_model()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match=r"33.*block_size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    cache = cache_of(model(torch.zeros(1, 30, dtype=torch.long), use_cache=True))
    with pytest.raises(ValueError, match=r"past 30 \+ new 3"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="at most 2 new tokens"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), max_new_tokens=5, do_sample=False)


# ---------------------------------------------------------------- generate()

def test_greedy_cache_equals_no_cache_equals_argmax_loop():
    model = wide_model()
    ids = torch.randint(0, V - 1, (1, 5))
    kw = dict(max_new_tokens=20, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
        loop = argmax_loop(model, ids, 20)
    assert len(set(cached[0, 5:].tolist())) > 3, "weights too tame for the test to mean anything"
    assert torch.equal(cached, uncached) and torch.equal(cached, loop)


def test_seeded_sampling_and_padded_batch():
    model = wide_model(seed=1)
    pad = V - 1
    batch = torch.tensor([[5, 17, 42, 8], [pad, pad, 33, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    kw = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=pad, eos_token_id=None)
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(model.generate(batch, do_sample=True, top_k=20, use_cache=use_cache, **kw))
    assert torch.equal(outs[0], outs[1])
    with torch.no_grad():
        greedy = model.generate(batch, do_sample=False, **kw)
        alone = model.generate(torch.tensor([[33, 2]]), do_sample=False, max_new_tokens=10, eos_token_id=None)
    assert torch.equal(greedy[1, 2:], alone[0])  # padding changes nothing


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("tied", [True, False])
def test_adamw_learns_a_repeating_pattern(tied):
    torch.manual_seed(0)
    model = BigramForCausalLM(tiny_config(n_embd=32, tie_word_embeddings=tied)).train()
    seq = (torch.arange(32) % 7).repeat(8, 1)  # 0 1 2 ... 6 0 1 ...: each token has one successor
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = model(seq, labels=seq).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    if tied:
        # wte @ wte.T is symmetric: "a then b" scores as "b then a", so a 7-cycle
        # cannot beat probability 1/2 per step (loss >= ln 2) -- see the class docstring.
        assert losses[-1] > 0.6
    else:
        assert losses[-1] < 0.1


# ---------------------------------------------------------------- save / load

@pytest.mark.parametrize("tied", [True, False])
def test_save_load_round_trip(tmp_path, tied):
    model = wide_model(tie_word_embeddings=tied)
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert "modeling_bigram.py" in files and "configuration_bigram.py" in files
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt_scratch_bigram"
    assert cfg["auto_map"]["AutoModelForCausalLM"].endswith("modeling_bigram.BigramForCausalLM")
    assert cfg["auto_map"]["AutoConfig"].endswith("configuration_bigram.BigramConfig")
    assert "num_hidden_layers" not in cfg
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys == ({"wte.weight"} if tied else {"wte.weight", "lm_head.weight"})

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BigramForCausalLM) and isinstance(AutoConfig.from_pretrained(tmp_path), BigramConfig)
    assert (loaded.lm_head.weight is loaded.wte.weight) == tied
    x = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


REMOTE_SCRIPT = WITHOUT_GPT_SCRATCH + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForCausalLM
    folder, ids = sys.argv[1], json.loads(sys.argv[2])
    m = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
    assert type(m).__name__ == "BigramForCausalLM"
    x = torch.tensor(ids)
    with torch.no_grad():
        logits = m(x).logits[0, -1].tolist()
        gen = m.generate(x, max_new_tokens=8, do_sample=False).tolist()
    print(json.dumps({"logits": logits, "gen": gen}))
    """
)


REMOTE_IDS = [[3, 14, 15, 92, 65]]


@pytest.fixture(scope="module", autouse=True)
def remote_run(tmp_path_factory):
    """Starts the remote-code subprocess before this module's other tests, so its
    ~10 s of imports overlap them; test_trust_remote_code_... collects the result."""
    tmp = tmp_path_factory.mktemp("remote")
    model = wide_model()
    model.save_pretrained(tmp / "model")
    (tmp / "load.py").write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-I", str(tmp / "load.py"), str(tmp / "model"), json.dumps(REMOTE_IDS)],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    yield model, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_trust_remote_code_load_without_gpt_scratch(remote_run):
    model, proc = remote_run
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    got = json.loads(stdout.strip().splitlines()[-1])
    x = torch.tensor(REMOTE_IDS)
    with torch.no_grad():
        ref = model(x).logits[0, -1]
        gen = model.generate(x, max_new_tokens=8, do_sample=False)
    assert (torch.tensor(got["logits"]) - ref).abs().max() < 1e-5
    assert got["gen"] == gen.tolist()
