"""The transformers 5.x contracts the model claims: attention backends, caches, outputs, training hooks.

Every float comparison is relative to the magnitude compared (fp32 rounding differs
between AVX2, AVX-512 and AMX CPUs).
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

import gpt_scratch  # noqa: F401
from gpt_scratch import BigramConfig, BigramForCausalLM, GPTConfig, GPTForCausalLM
from gpt_scratch.kv_cache import DecodingCache, GrowingLayer
from gpt_scratch.transformers_compat import CACHE, cache_of
from wide_weights import widen

V = 97


def model_with(seed=0, **kw):
    """A 2-layer model of wide weights (wide_weights.widen), config overridable by keyword."""
    torch.manual_seed(seed)
    args = dict(vocab_size=V, block_size=48, n_layer=2, n_head=4, n_embd=32)
    args.update(kw)
    return widen(GPTForCausalLM(GPTConfig(**args)))


def close(a, b, rel=1e-5):
    """|a - b| small against the size of what is compared."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rel * scale, ((a - b).abs().max().item(), scale)


def left_padded_batch():
    ids = torch.randint(0, V - 1, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :2] = 0
    ids[mask == 0] = V - 1
    return ids, mask


# ---------------------------------------------------------------- attention backends

@pytest.mark.parametrize("impl", ["eager", "flex_attention"])
def test_attention_backends_give_sdpa_logits_with_padding(impl):
    model = model_with()
    ids, mask = left_padded_batch()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        model.set_attn_implementation(impl)
        assert model.config._attn_implementation == impl
        got = model(ids, attention_mask=mask).logits
    keep = mask.bool()  # padded positions attend to nothing real: backends may differ there
    close(got[keep], ref[keep])


def test_eager_at_load_time_returns_attention_weights(tmp_path):
    model_with().save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    assert len(out.attentions) == 2
    att = out.attentions[0]
    assert att.shape == (2, 4, 7, 7)
    close(att.sum(-1), torch.ones(2, 4, 7))
    assert torch.all(att.triu(1) == 0)  # causal: nothing from the future


def test_hidden_states_from_the_config_and_tuples_without_return_dict():
    model = model_with()
    model.config.output_hidden_states = True
    ids = torch.randint(0, V, (1, 5))
    with torch.no_grad():
        out = model(ids)
        as_tuple = model(ids, return_dict=False)
    assert len(out.hidden_states) == 3  # embeddings + one per block (the last after ln_f)
    close(out.hidden_states[-1] @ model.lm_head.weight.t(), out.logits)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits)


# ---------------------------------------------------------------- caches

def test_static_cache_generate_equals_no_cache_with_left_padding():
    model = model_with(seed=1)
    ids, mask = left_padded_batch()
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=V - 1, eos_token_id=None)
    with torch.no_grad():
        none = model.generate(ids, use_cache=False, **kw)
        static = model.generate(ids, cache_implementation="static", **kw)
        dynamic = model.generate(ids, **{CACHE: DynamicCache(config=model.config)}, **kw)  # generate()'s name for it
        default = model.generate(ids, **kw)  # a DecodingCache on CPU
    assert torch.equal(static, none)
    assert torch.equal(dynamic, none)
    assert torch.equal(default, none)


def test_static_cache_decode_step_ignores_the_empty_slots():
    model = model_with(seed=2)
    ids = torch.randint(0, V, (2, 8))
    with torch.no_grad():
        ref = model(ids).logits[:, -1]
        cache = StaticCache(config=model.config, max_cache_len=32)
        model(ids[:, :-1], cache=cache, use_cache=True)
        step = model(ids[:, -1:], cache=cache, use_cache=True).logits[:, -1]
    close(step, ref)


def test_beam_search_and_sampling_agree_across_caches():
    model = model_with(seed=3)
    ids = torch.randint(0, V - 1, (2, 5))
    beams = dict(max_new_tokens=8, do_sample=False, num_beams=3, num_return_sequences=2, pad_token_id=V - 1)
    sample = dict(max_new_tokens=8, do_sample=True, top_k=20, pad_token_id=V - 1)
    with torch.no_grad():
        assert torch.equal(model.generate(ids, **beams), model.generate(ids, use_cache=False, **beams))
        outs = []
        for use_cache in (True, False):
            torch.manual_seed(7)
            outs.append(model.generate(ids, use_cache=use_cache, **sample))
    assert torch.equal(outs[0], outs[1])


def test_growing_layer_appends_survive_crop_and_reorder():
    cache = DecodingCache(config=GPTConfig(n_layer=1, n_head=3, n_embd=12, vocab_size=V))
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    chunks = [torch.randn(2, 3, t, 4) for t in (5, 1, 1, 3)]
    for c in chunks:
        k, v = cache.update(c, c + 1, 0)
    full = torch.cat(chunks, dim=2)
    assert torch.equal(k, full) and torch.equal(v, full + 1) and cache.get_seq_length() == 10
    cache.crop(-4)  # as assisted generation does
    new = torch.randn(2, 3, 2, 4)
    k, _ = cache.update(new, new, 0)
    assert torch.equal(k, torch.cat([full[:, :, :6], new], dim=2))
    cache.reorder_cache(torch.tensor([1, 0]))  # as beam search does
    last = torch.randn(2, 3, 1, 4)
    k, _ = cache.update(last, last, 0)
    assert torch.equal(k, torch.cat([torch.cat([full[:, :, :6], new], dim=2)[[1, 0]], last], dim=2))


def test_decoding_cache_lm_head_equals_the_plain_product():
    torch.manual_seed(0)
    w = torch.randn(300, 48)
    for shape in [(1, 1, 48), (2, 1, 48), (8, 1, 48), (64, 1, 48), (3, 30, 48)]:
        cache = DecodingCache(config=GPTConfig(n_layer=1, n_head=4, n_embd=48, vocab_size=300))
        x = torch.randn(shape)
        with torch.no_grad():
            got = cache.lm_head(x, w)
        assert got.shape == (*shape[:-1], 300) and got.is_contiguous()
        close(got, F.linear(x, w))


def test_cache_names_new_and_deprecated():
    model = model_with()
    ids = torch.randint(0, V, (1, 10))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        cache = cache_of(model(ids[:, :6], use_cache=True))
        close(model(ids[:, 6:], cache=cache).logits[:, -1], full)
        old = cache_of(model(ids[:, :6], use_cache=True))
        if CACHE == "cache":  # transformers >= 5.24: the old name still works, with transformers' warning
            with pytest.warns(FutureWarning, match="past_key_values"):
                step = model(ids[:, 6:], past_key_values=old).logits[:, -1]
        else:  # before 5.24 it is the library's own name: taken silently
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                step = model(ids[:, 6:], past_key_values=old).logits[:, -1]
    close(step, full)


# ---------------------------------------------------------------- training contracts

def test_gradient_checkpointing_gives_the_same_gradients():
    model = model_with(seed=4).train()
    ids = torch.randint(0, V, (2, 12))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24 (the old name warns there)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(block.gradient_checkpointing for block in model.transformer.h)
    checkpointed = grads()
    for name, g in plain.items():
        close(checkpointed[name], g, rel=1e-5)


def test_logits_returned_with_labels_in_train_and_eval_unless_skipped():
    model = model_with().train()
    ids = torch.randint(0, V, (2, 6))
    out = model(ids, labels=ids)
    assert out.logits is not None and out.logits.shape == (2, 6, V) and out.loss.requires_grad
    model.eval()
    assert model(ids, labels=ids).logits is not None
    skipped = model(ids, labels=ids, skip_logits=True)
    assert skipped.logits is None
    close(skipped.loss, out.loss)
    with pytest.raises(ValueError, match="skip_logits=True needs labels"):
        model(ids, skip_logits=True)


@pytest.mark.parametrize("bad", [V, -5])
@pytest.mark.parametrize("skip_logits", [False, True])
def test_labels_outside_the_vocabulary_refused_on_every_path(bad, skip_logits):
    model = model_with().train()
    ids = torch.randint(0, V, (2, 6))
    labels = ids.clone()
    labels[1, 3] = bad
    with pytest.raises(ValueError, match=rf"labels holds {bad}, outside the vocabulary"):
        model(ids, labels=labels, skip_logits=skip_logits)


def test_float_input_ids_refused_by_name():
    with pytest.raises(TypeError, match="input_ids must be integer token ids"):
        model_with()(torch.zeros(1, 3))


# ---------------------------------------------------------------- bad inputs: both families refuse them alike

def both_families():
    torch.manual_seed(0)
    return [model_with(), BigramForCausalLM(BigramConfig(vocab_size=V, n_embd=16, block_size=48)).eval()]


@pytest.mark.parametrize("family", [0, 1], ids=["gpt", "bigram"])
def test_attention_mask_of_another_length_refused_in_forward_and_generate(family):
    # the regression of the model rewrite: a mask of 5 for 3 ids was taken and moved the logits
    model = both_families()[family]
    ids = torch.randint(0, V, (1, 3))
    with pytest.raises(ValueError, match=r"attention_mask must have shape.*\(1, 0 \+ 3\), got \(1, 5\)"):
        model(ids, attention_mask=torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have the prompt's shape \(1, 3\), got \(1, 5\)"):
        model.generate(ids, attention_mask=torch.ones(1, 5, dtype=torch.long), max_new_tokens=2, do_sample=False)
    # with a cache the mask covers past + new tokens: that length is taken, the new tokens' alone is not
    with torch.no_grad():
        cache = cache_of(model(ids, use_cache=True))
        step = model(ids[:, -1:], cache=cache, attention_mask=torch.ones(1, 4, dtype=torch.long))
        assert step.logits.shape[:2] == (1, 1)
        with pytest.raises(ValueError, match=r"\(1, 4 \+ 1\), got \(1, 1\)"):
            model(ids[:, -1:], cache=cache, attention_mask=torch.ones(1, 1, dtype=torch.long))


@pytest.mark.parametrize("family", [0, 1], ids=["gpt", "bigram"])
def test_empty_one_dimensional_and_mislabelled_inputs_refused_by_shape(family):
    model = both_families()[family]
    with pytest.raises(ValueError, match=r"no tokens to run \(input of shape \(1, 0\)\)"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must be 2-D.*got shape \(4,\).*unsqueeze\(0\)"):
        model(torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"input_ids must be 2-D.*got shape \(4,\).*unsqueeze\(0\)"):
        model.generate(torch.tensor([1, 2, 3, 4]), max_new_tokens=2, do_sample=False)
    ids = torch.randint(0, V, (2, 3))
    with pytest.raises(ValueError, match=r"labels must have the shape of the input ids, \(2, 3\), got \(2, 2\)"):
        model(ids, labels=ids[:, :2])
    with pytest.raises(ValueError, match=r"labels must have the shape of the input ids, \(2, 3\), got \(3,\)"):
        model(ids, labels=ids[0])
    assert model(ids, labels=ids).loss.isfinite()  # the right shape still trains


# ---------------------------------------------------------------- configs: one rule for both

@pytest.mark.parametrize("config_class", [GPTConfig, BigramConfig])
def test_special_ids_follow_one_rule_in_both_configs(config_class):
    small = config_class(vocab_size=512)  # GPT-2's <|endoftext|> default does not fit: cleared
    assert small.bos_token_id is None and small.eos_token_id is None
    assert config_class(vocab_size=512, bos_token_id=7).bos_token_id == 7
    with pytest.raises(ValueError, match=r"bos_token_id must be None or a token id in \[0, 512\)"):
        config_class(vocab_size=512, bos_token_id=600)
    assert config_class().eos_token_id == 50256


@pytest.mark.parametrize("kw, message", [
    (dict(n_layers=3), "no setting 'n_layers'.*did you mean 'n_layer'"),
    (dict(layer_norm_epsilon=-1), "layer_norm_epsilon must be a positive number"),
    (dict(initializer_range=0), "initializer_range must be a positive number"),
])
def test_gpt_config_refuses_typos_and_bad_numbers(kw, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kw)
