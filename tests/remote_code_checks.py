"""What a user of any supported transformers does with a saved folder, by its remote code alone.

Run by tests/test_consumers_transformers.py in an environment where gpt_scratch cannot be
imported (conftest.WITHOUT_GPT_SCRATCH makes sure of that). Prints one JSON object per folder
(a list): the greedy tokens of each way of generating, the pipeline's text, and how far
gradient checkpointing and the attention backends move gradients and logits; the test
compares them within the run and across transformers releases.
"""

import json
import sys

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

PROMPTS = ["ROMEO:", "To be, or not to be, that is", "First Citizen:\nBefore we proceed any further, hear me"]
NEW_TOKENS = 12


def rel_diff(a, b):
    return ((a - b).abs().max() / max(a.abs().max(), b.abs().max(), 1e-30)).item()


def main(folder):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    module = type(model).__module__
    assert module.startswith("transformers_modules"), module
    out = {"transformers": transformers.__version__, "torch": torch.__version__}
    greedy = dict(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=tok.eos_token_id)

    with torch.no_grad():
        # each prompt alone, four ways: the CPU decoding cache, a static cache, a DynamicCache, no cache
        ways = {"default": {}, "static": {"cache_implementation": "static"}, "dynamic": {"cache_implementation": "dynamic"},
                "no_cache": {"use_cache": False}}
        for name, kw in ways.items():
            out[name] = [model.generate(**tok(p, return_tensors="pt"), **greedy, **kw)[0].tolist() for p in PROMPTS]
        # all prompts in one left-padded batch
        tok.padding_side = "left"
        batch = tok(PROMPTS, return_tensors="pt", padding=True)
        rows = model.generate(**batch, **greedy)
        width = batch["input_ids"].shape[1]
        out["left_padded_new_tokens"] = [row[width:].tolist() for row in rows]
        # the body alone, through auto_map's AutoModel (what serving engines' transformers backends load)
        body = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        ids = tok(PROMPTS[2], return_tensors="pt")["input_ids"]
        out["auto_model_class"] = type(body).__name__
        out["auto_model_rel_diff"] = rel_diff(body(ids).last_hidden_state, model.transformer(ids).last_hidden_state)
        # attention backends against sdpa (the default)
        ref = model(**batch).logits[batch["attention_mask"].bool()]
        for impl in ("eager", "flex_attention"):
            try:
                model.set_attn_implementation(impl)
                got = model(**batch).logits[batch["attention_mask"].bool()]
                out[f"{impl}_rel_diff"] = rel_diff(got, ref)
            except Exception as e:  # reported, and failed by the test
                out[f"{impl}_rel_diff"] = f"{type(e).__name__}: {e}"
        model.set_attn_implementation("sdpa")

    gen = pipeline("text-generation", model=folder, trust_remote_code=True)
    out["pipeline"] = [gen(p, **greedy)[0]["generated_text"] for p in PROMPTS]
    out["decoded_default"] = [tok.decode(ids) for ids in out["default"]]

    # gradient checkpointing gives the gradients of a plain backward pass
    model.train()
    ids = tok(PROMPTS[2], return_tensors="pt")["input_ids"]

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    torch.manual_seed(1)
    plain = grads()
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(block.gradient_checkpointing for block in model.transformer.h)
    torch.manual_seed(1)
    out["checkpointing_rel_diff"] = rel_diff(grads(), plain)
    return out


if __name__ == "__main__":  # tests run it behind conftest.WITHOUT_GPT_SCRATCH (test_consumers_transformers.py)
    print(json.dumps([main(folder) for folder in sys.argv[1:]]))
