"""The stock GPT-2 route to llama.cpp: README "Serve"'s export and converter lines make a GGUF of the trained model.

llama.cpp's own converter (convert_hf_to_gguf.py and what it imports, from the
llama-cpp-python sdist on PyPI, cached by extra_envs.py, never committed) runs on the
`convert_gpt2.py --to-hf` export; the GGUF is then read back with the gguf reader that
comes with it: llama.cpp's metadata for a GPT-2 of this shape and tokenizer, and every
tensor equal to the gpt_scratch model's own weights. An opt-in test (GPT_SCRATCH_LLAMA_CPP=1)
runs the GGUF in llama.cpp itself and compares its greedy tokens with transformers'.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import built_or_skip
from extra_envs import CONVERTER_PARTS, clean_env, llama_cpp_converter, python_of
from readme_commands import readme_commands, workdir
from remote_code_checks import PROMPTS


@pytest.fixture(scope="module")
def converter():
    return built_or_skip(llama_cpp_converter)


def gguf_tensor_names(n_layer):
    """What llama.cpp's GPT-2 architecture reads: no output.weight, the head is tied to token_embd."""
    per_block = ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"]
    names = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    for i in range(n_layer):
        names |= {f"blk.{i}.{t}.{p}" for t in per_block for p in ("weight", "bias")}
    return names


def gpt_scratch_name(gguf_name):
    """The gpt_scratch tensor a GGUF tensor holds (same layout: nn.Linear's (out, in))."""
    fixed = {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
             "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    _, i, part, param = gguf_name.split(".")
    module = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
              "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}[part]
    return f"transformer.h.{i}.{module}.{param}"


@pytest.fixture(scope="module")
def gguf_file(converter, trained_model_dir, tmp_path_factory):
    """README "Serve"'s export and converter lines, as printed, in a folder holding scripts/, out/shakespeare/model
    and llama.cpp's converter."""
    commands = [argv for argv, _ in readme_commands("Serve")]
    export = next(argv for argv in commands if argv[:2] == ["python", "scripts/convert_gpt2.py"])
    convert = next(argv for argv in commands if argv[:2] == ["python", "convert_hf_to_gguf.py"])
    tmp_path = workdir(tmp_path_factory.mktemp("gguf"))
    os.makedirs(tmp_path / "out" / "shakespeare")
    os.symlink(trained_model_dir, tmp_path / "out" / "shakespeare" / "model")
    for part in CONVERTER_PARTS:
        os.symlink(os.path.join(converter, part), tmp_path / part)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for argv in (export, convert):
        done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (argv, done.stderr[-3000:])
    return str(tmp_path / convert[convert.index("--outfile") + 1])


def test_readme_gguf_route_holds_the_models_weights_and_gpt2_metadata(converter, gguf_file, trained_model_dir):
    sys.path.insert(0, os.path.join(converter, "gguf-py"))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.remove(os.path.join(converter, "gguf-py"))
    reader = GGUFReader(gguf_file)
    meta = {name: field.contents() for name, field in reader.fields.items()}
    cfg = json.load(open(os.path.join(trained_model_dir, "config.json")))
    assert meta["general.architecture"] == "gpt2"
    assert meta["gpt2.block_count"] == cfg["n_layer"]
    assert meta["gpt2.context_length"] == cfg["block_size"]
    assert meta["gpt2.embedding_length"] == cfg["n_embd"]
    assert meta["gpt2.feed_forward_length"] == 4 * cfg["n_embd"]
    assert meta["gpt2.attention.head_count"] == cfg["n_head"]
    assert abs(meta["gpt2.attention.layer_norm_epsilon"] - cfg["layer_norm_epsilon"]) < 1e-9
    # GPT-2's tokenizer, recognised by llama.cpp as such (the pre-tokenizer is chosen by a hash of its output)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(meta["tokenizer.ggml.tokens"]) == cfg["vocab_size"] == 50257
    assert len(meta["tokenizer.ggml.merges"]) == 50000
    assert meta["tokenizer.ggml.tokens"][50256] == "<|endoftext|>"
    assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == 50256

    weights = load_file(os.path.join(trained_model_dir, "model.safetensors"))
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == gguf_tensor_names(cfg["n_layer"])
    for name, t in tensors.items():
        assert t.tensor_type.name == "F32", name
        ours = weights[gpt_scratch_name(name)]
        got = torch.from_numpy(t.data.copy())
        assert got.shape == ours.shape and torch.equal(got, ours), name


LLAMA_CPP_RUN = """
import json, sys
from llama_cpp import Llama
spec = json.loads(sys.argv[2])
llm = Llama(model_path=sys.argv[1], n_ctx=spec["n_ctx"], n_threads=1, verbose=False)
out = []
for prompt in spec["prompts"]:
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    new = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        new.append(token)
        if len(new) == spec["new_tokens"]:
            break
    out.append({"prompt_ids": ids, "new": new})
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.environ.get("GPT_SCRATCH_LLAMA_CPP"),
                    reason="builds llama.cpp (llama-cpp-python from source, ~6 minutes on 2 cores): "
                           "set GPT_SCRATCH_LLAMA_CPP=1 to run it")
def test_llama_cpp_greedy_equals_transformers(gguf_file, trained_model_dir, tmp_path):
    """llama.cpp itself (through llama-cpp-python 0.3.36, built from source) runs the GGUF: GPT-2's token ids
    for the prompts and transformers' greedy continuation."""
    from transformers import AutoTokenizer

    from gpt_scratch import GPTForCausalLM

    prompts, new_tokens = PROMPTS, 24
    python = built_or_skip(python_of, "llama-cpp")
    spec = {"prompts": prompts, "new_tokens": new_tokens, "n_ctx": 64}
    done = subprocess.run([python, "-c", LLAMA_CPP_RUN, gguf_file, json.dumps(spec)], capture_output=True, text=True,
                          timeout=600, env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(trained_model_dir)
    model = GPTForCausalLM.from_pretrained(trained_model_dir).eval()
    for prompt, result in zip(prompts, got):
        ids = tok(prompt)["input_ids"]
        assert result["prompt_ids"] == ids, prompt
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens,
                                      eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert result["new"] == expected, (prompt, tok.decode(result["new"]), tok.decode(expected))
