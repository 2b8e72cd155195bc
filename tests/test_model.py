"""The model against its peers: transformers' GPT-2, generate() with and without cache, save/load, remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import WITHOUT_GPT_SCRATCH
from wide_weights import argmax_loop, widen
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

from gpt_scratch import GPTConfig, GPTForCausalLM, GPTModel, from_hf_gpt2, to_hf_gpt2
from gpt_scratch.transformers_compat import cache_of

V = 97  # a small vocabulary keeps these tests fast


def tiny_config(**kw):
    args = dict(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32, bos_token_id=V - 1, eos_token_id=V - 1)
    args.update(kw)
    return GPTConfig(**args)


def wide_model(seed=0, **kw):
    """tiny_config's model with wide weights (wide_weights.widen)."""
    torch.manual_seed(seed)
    return widen(GPTForCausalLM(tiny_config(**kw)))


def hf_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=V - 1, eos_token_id=V - 1)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # biases and LayerNorms too, so the mapping of every tensor is checked
    return model.eval()


# ---------------------------------------------------------------- config

@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(n_embd=30, n_head=4), "n_embd"),
        (dict(n_layer=0), "n_layer"),
        (dict(n_head=-1), "n_head"),
        (dict(block_size=0), "block_size"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_layer="2"), "n_layer"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**kw)


def test_config_defaults_are_gpt2_124m_and_hf_names_map():
    c = GPTConfig()
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd) == (50257, 1024, 12, 12, 768)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.max_position_embeddings) == (768, 12, 12, 1024)
    assert c.tie_word_embeddings and c.use_cache and c.bos_token_id == c.eos_token_id == 50256
    m = GPTForCausalLM(tiny_config())
    assert m.lm_head.weight is m.transformer.wte.weight


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    m = GPTForCausalLM(tiny_config(n_layer=8, n_embd=64, n_head=4))
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in m.transformer.h]).std().item()
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in m.transformer.h]).std().item()
    assert abs(fc - 0.02) < 0.002
    assert abs(proj - 0.02 / (2 * 8) ** 0.5) < 0.001


# ---------------------------------------------------------------- against transformers' GPT-2

def test_logits_equal_transformers_gpt2_both_ways():
    hf = hf_gpt2()
    ours = from_hf_gpt2(hf).eval()
    x = torch.randint(0, V, (3, 17))
    with torch.no_grad():
        ref = hf(x).logits
        assert (ours(x).logits - ref).abs().max() < 1e-4
        back = to_hf_gpt2(ours).eval()
        assert (back(x).logits - ref).abs().max() < 1e-4
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_conversion_through_folders_loads_in_stock_transformers(tmp_path):
    hf = hf_gpt2(seed=1)
    hf.save_pretrained(tmp_path / "hf")
    ours = from_hf_gpt2(str(tmp_path / "hf")).eval()
    to_hf_gpt2(ours).save_pretrained(tmp_path / "back")
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and "auto_map" not in cfg
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        assert (reloaded(x).logits - hf(x).logits).abs().max() < 1e-4


def test_from_hf_refuses_unsupported_variant():
    cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=1, n_head=4, activation_function="relu")
    with pytest.raises(ValueError, match="activation_function"):
        from_hf_gpt2(GPT2LMHeadModel(cfg))


def test_bias_free_model_exports_with_zero_biases():
    torch.manual_seed(0)
    ours = GPTForCausalLM(tiny_config(bias=False)).eval()
    x = torch.randint(0, V, (1, 8))
    with torch.no_grad():
        assert (to_hf_gpt2(ours).eval()(x).logits - ours(x).logits).abs().max() < 1e-4


# ---------------------------------------------------------------- generate()

def test_greedy_cache_equals_no_cache_equals_argmax_loop():
    model = wide_model()
    ids = torch.randint(0, V - 1, (1, 5))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=20, do_sample=False, use_cache=True)
        uncached = model.generate(ids, max_new_tokens=20, do_sample=False, use_cache=False)
        loop = argmax_loop(model, ids, 20)
    assert len(set(cached[0, 5:].tolist())) > 3, "weights too tame for the test to mean anything"
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, loop)


def test_greedy_matches_transformers_gpt2_generate():
    hf = hf_gpt2(seed=3)
    ours = from_hf_gpt2(hf).eval()
    ids = torch.randint(0, V - 1, (2, 4))
    with torch.no_grad():
        a = hf.generate(ids, max_new_tokens=15, do_sample=False, pad_token_id=V - 1)
        b = ours.generate(ids, max_new_tokens=15, do_sample=False, pad_token_id=V - 1)
    assert torch.equal(a, b)


def test_beam_search_matches_transformers_gpt2():
    # beam search reorders the cache between steps: the growing KV buffers must follow
    hf = hf_gpt2(seed=4)
    ours = from_hf_gpt2(hf).eval()
    ids = torch.randint(0, V - 1, (2, 4))
    kw = dict(max_new_tokens=12, do_sample=False, num_beams=3, num_return_sequences=2, pad_token_id=V - 1)
    with torch.no_grad():
        assert torch.equal(hf.generate(ids, **kw), ours.generate(ids, **kw))


def test_batched_decoding_returns_contiguous_logits_and_hidden_states():
    model = wide_model(seed=3)
    ids = torch.randint(0, V - 1, (8, 5))
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        step = model(ids[:, -1:], cache=cache_of(model(ids[:, :-1])), output_hidden_states=True)
    for out in (full, step):
        assert out.logits.is_contiguous() and all(h.is_contiguous() for h in out.hidden_states)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1])
    ref = F.linear(full.hidden_states[-1], model.lm_head.weight)  # the plain x @ W.T
    torch.testing.assert_close(full.logits, ref)


def test_decoding_weight_copy_never_serves_stale_weights():
    # the lm_head copy a CPU generate() decodes with lives in that call's cache only
    # (fused AdamW updates weights in place without bumping their version)
    model = wide_model()
    x = torch.randint(0, V - 1, (1, 6))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=V - 1)
    with torch.no_grad():
        a = model.generate(x, **kw)
        model.lm_head.weight.mul_(-1)
        b = model.generate(x, **kw)
    assert torch.equal(b, argmax_loop(model, x, 8)) and not torch.equal(a, b)


def test_seeded_sampling_reproducible_and_cache_independent():
    model = wide_model(seed=1)
    ids = torch.randint(0, V - 1, (2, 4))
    kw = dict(max_new_tokens=15, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, pad_token_id=V - 1)
    outs = []
    for use_cache in (True, True, False):
        torch.manual_seed(123)
        with torch.no_grad():
            outs.append(model.generate(ids, use_cache=use_cache, **kw))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0], outs[2])


def test_left_padded_batch_matches_each_prompt_alone():
    model = wide_model(seed=2)
    pad = V - 1
    a = torch.tensor([[5, 17, 42, 8, 9, 61]])
    b = torch.tensor([[33, 2, 7]])
    batch = torch.tensor([[5, 17, 42, 8, 9, 61], [pad, pad, pad, 33, 2, 7]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.no_grad():
        out = model.generate(batch, attention_mask=mask, **kw)
        alone_a = model.generate(a, **kw)
        alone_b = model.generate(b, **kw)
    assert torch.equal(out[0], alone_a[0])
    assert torch.equal(out[1, 3:], alone_b[0])


def test_cache_argument_names_new_and_old():
    model = wide_model()
    x = torch.randint(0, V, (1, 10))
    with torch.no_grad():
        full = model(x).logits[:, -1]
        out = model(x[:, :6], use_cache=True)
        assert isinstance(cache_of(out), DynamicCache) and cache_of(out).get_seq_length() == 6
        step_new = model(x[:, 6:], cache=cache_of(out)).logits[:, -1]
        out2 = model(x[:, :6], use_cache=True)
        step_old = model(x[:, 6:], past_key_values=cache_of(out2)).logits[:, -1]
    assert (step_new - full).abs().max() < 1e-4
    assert (step_old - full).abs().max() < 1e-4


def test_logits_to_keep_and_loss():
    model = wide_model()
    x = torch.randint(0, V, (2, 12))
    labels = x.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        out = model(x, labels=labels)
        last = model(x, logits_to_keep=1).logits
    assert last.shape == (2, 1, V)
    assert (last[:, 0] - out.logits[:, -1]).abs().max() < 1e-5
    shifted = labels[:, 1:].reshape(-1)
    ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), shifted, ignore_index=-100)
    assert torch.allclose(out.loss, ref, atol=1e-5)


@pytest.mark.parametrize("num_items", [None, 17])
def test_training_loss_and_gradients_equal_the_logits_path(num_items):
    # the fused training loss (skip_logits=True) must be transformers' causal-LM loss, gradients included
    model = wide_model().train()
    x = torch.randint(0, V, (3, 12))
    labels = x.clone()
    labels[0, :4] = -100
    kw = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    out = model(x, labels=labels, skip_logits=True, **kw)
    assert out.logits is None  # asked not to be materialised
    out.loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    plain = model(x, labels=labels, **kw)  # what transformers' GPT-2 returns: loss and logits
    assert plain.logits is not None and plain.logits.requires_grad
    ref = model.loss_function(plain.logits, labels, vocab_size=V, **kw)
    torch.testing.assert_close(plain.loss, ref)
    ref.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=0)
    with torch.no_grad():  # what evaluation asks for: the same loss, no gradient work
        torch.testing.assert_close(model(x, labels=labels, skip_logits=True, **kw).loss, ref.detach(), rtol=1e-5, atol=0)
    for n, p in model.named_parameters():
        # fp32 rounding differs between CPUs (AVX2, AVX-512): compare relative to the gradient's size
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(fused[n], p.grad, rtol=1e-4, atol=1e-5 * scale, msg=n)


def test_lm_head_cross_entropy_across_chunk_boundaries_and_in_bf16():
    # chunk boundaries inside the batch and the vocabulary change nothing
    from gpt_scratch.lm_head_loss import LMHeadCrossEntropy

    torch.manual_seed(0)

    h = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 9, 10, 11, 50, -100, 95, 96, 19, 20])  # at and beside slice edges
    n = (t != -100).sum()
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100)
    for rows, vocab in [(3, 10), (10, 97), (1, 200), (4, 7)]:
        torch.testing.assert_close(LMHeadCrossEntropy.apply(h, w, t, n, rows, vocab), ref)
        with torch.no_grad():  # evaluation: the loss alone, without the gradient products
            torch.testing.assert_close(LMHeadCrossEntropy.apply(h, w, t, n, rows, vocab, float("-inf"), False), ref)
    assert torch.autograd.gradcheck(lambda h, w: LMHeadCrossEntropy.apply(h, w, t, n, 3, 10), (h, w))
    # bf16 (autocast's dtype): bf16 products, fp32 softmax and sums, gradients back in bf16
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    LMHeadCrossEntropy.apply(hb, wb, t, n, 3, 10).backward()
    hr, wr = h.detach().bfloat16().float().requires_grad_(), w.detach().bfloat16().float().requires_grad_()
    ref = F.cross_entropy((hr @ wr.t()).bfloat16().float(), t, ignore_index=-100)
    ref.backward()
    assert hb.grad.dtype == wb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(hb.grad.float(), hr.grad, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(wb.grad.float(), wr.grad, rtol=2e-2, atol=2e-3)


# ---------------------------------------------------------------- input checks

def test_too_long_input_names_both_lengths():
    model = wide_model()
    with pytest.raises(ValueError, match=r"33.*block_size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("bad", [-1, V])
def test_out_of_vocab_ids_rejected(bad):
    model = wide_model()
    x = torch.zeros(1, 4, dtype=torch.long)
    x[0, 2] = bad
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(x)


def test_generation_past_block_size_refused_before_work():
    model = wide_model()
    ids = torch.zeros(1, 30, dtype=torch.long)
    with pytest.raises(ValueError, match=r"at most 2 new tokens"):
        model.generate(ids, max_new_tokens=5, do_sample=False)
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape == (1, 32)


# ---------------------------------------------------------------- save / load

def test_save_load_round_trip_safetensors_only_and_tied(tmp_path):
    model = wide_model()
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys  # stored once
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt_scratch"
    assert cfg["auto_map"]["AutoModelForCausalLM"].endswith("GPTForCausalLM")
    assert "modeling_gpt.py" in files and "configuration_gpt.py" in files

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GPTForCausalLM)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    x = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GPTConfig)


def test_base_model_loads_from_causal_lm_folder(tmp_path):
    model = wide_model()
    model.save_pretrained(tmp_path)
    body = GPTModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, V, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(body(x).last_hidden_state, model.transformer(x).last_hidden_state)


REMOTE_SCRIPT = WITHOUT_GPT_SCRATCH + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForCausalLM
    folder, ids = sys.argv[1], json.loads(sys.argv[2])
    m = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
    assert m.lm_head.weight is m.transformer.wte.weight
    x = torch.tensor(ids)
    with torch.no_grad():
        logits = m(x).logits[0, -1].tolist()
        gen = m.generate(x, max_new_tokens=8, do_sample=False).tolist()
    print(json.dumps({"logits": logits, "gen": gen}))
    """
)


def test_trust_remote_code_load_without_gpt_scratch(tmp_path):
    model = wide_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    script = tmp_path / "load.py"
    script.write_text(REMOTE_SCRIPT)
    ids = [[3, 14, 15, 92, 65]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), json.dumps(ids)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    x = torch.tensor(ids)
    with torch.no_grad():
        ref = model(x).logits[0, -1]
        gen = model.generate(x, max_new_tokens=8, do_sample=False)
    # float rounding only (the subprocess's weights sit at other memory alignments)
    assert (torch.tensor(got["logits"]) - ref).abs().max() < 1e-4  # as against transformers GPT-2
    assert got["gen"] == gen.tolist()


# ---------------------------------------------------------------- training with transformers' Trainer

def test_transformers_trainer_reduces_loss(tmp_path):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config())
    seq = torch.arange(16) % 7  # a pattern a tiny model learns in a few steps
    data = [{"input_ids": seq, "labels": seq} for _ in range(32)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0]


def test_loss_restricted_to_the_used_vocabulary_is_the_full_loss():
    # a corpus that uses only some ids, with the other embedding rows at zero: the loss
    # over those ids (plus one logit for the rest) equals the full-vocabulary loss
    model = wide_model().train()
    used = torch.tensor(sorted({3, 5, 8, 13, 21, 34, 55, 89, 90, 96}))
    keep = torch.zeros(V, dtype=torch.bool)
    keep[used] = True
    with torch.no_grad():
        model.transformer.wte.weight[~keep] = 0
    x = used[torch.randint(0, len(used), (3, 12))]
    restricted = model(x, labels=x, skip_logits=True, loss_vocab_ids=used)
    restricted.loss.backward()
    grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    full = model(x, labels=x)
    full.loss.backward()
    torch.testing.assert_close(restricted.loss, full.loss, rtol=1e-5, atol=0)
    with torch.no_grad():
        loss = model(x, labels=x, skip_logits=True, loss_vocab_ids=used).loss
    torch.testing.assert_close(loss, full.loss.detach(), rtol=1e-5, atol=0)
    scale = model.transformer.wte.weight.grad.abs().max().item()
    torch.testing.assert_close(grad[keep], model.transformer.wte.weight.grad[keep], rtol=1e-4, atol=1e-5 * scale)
    assert torch.all(grad[~keep] == 0)  # the unused rows stay at zero
    with pytest.raises(ValueError, match="outside vocab_ids"):
        model(torch.tensor([[3, 4]]), labels=torch.tensor([[3, 4]]), skip_logits=True, loss_vocab_ids=used)
