"""Weights in and out of transformers' own GPT-2 (GPT2LMHeadModel).

Parameter names are the same on both sides; GPT-2's attention and MLP use a Conv1D
that stores its weight as (in, out), our nn.Linear stores (out, in), so those four
weights are transposed on the way through. The stock export is what runtimes that
take no remote code read (vLLM's and SGLang's own GPT-2, llama.cpp's converter).

    python scripts/convert_gpt2.py --from-hf path/to/gpt2 --out gpt2-scratch
    python scripts/convert_gpt2.py --to-hf out/shakespeare/model --out shakespeare-hf
"""

import argparse
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ..configuration_gpt import GPTConfig
from ..errors import ModelFolderError, run_cli
from ..modeling_gpt import GPTForCausalLM
from .model_folder import check_replaceable, load_model, read_config, save_model_folder

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _check_supported(c):
    problems = [p for bad, p in (
        (c.n_inner not in (None, 4 * c.n_embd), f"n_inner={c.n_inner} (only 4 * n_embd is supported)"),
        (c.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"),
         f"activation_function={c.activation_function!r} (only tanh GELU is supported)"),
        (not c.scale_attn_weights or c.scale_attn_by_inverse_layer_idx, "non-standard attention scaling"),
        (getattr(c, "add_cross_attention", False), "cross-attention")) if bad]
    if problems:
        raise ModelFolderError("this GPT-2 variant cannot be converted: " + "; ".join(problems) + "; only GPT-2's own "
                               "architecture maps onto gpt_scratch's GPT")


def _transposed(state_dict):
    return {k: v.t().contiguous() if k.endswith(CONV1D) else v for k, v in state_dict.items()
            if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # causal-mask buffers of older checkpoints


def from_hf_gpt2(path_or_model) -> GPTForCausalLM:
    """A GPTForCausalLM with the weights of a transformers GPT-2 (a model, or a folder it saved: checked first)."""
    if isinstance(path_or_model, (str, os.PathLike)):
        _check_model_type(path_or_model, "gpt2")
        hf = load_model(path_or_model, model_class=GPT2LMHeadModel)
    elif isinstance(path_or_model, GPT2LMHeadModel):
        hf = path_or_model
    else:
        raise TypeError(f"expected a GPT2LMHeadModel or a folder path, got {type(path_or_model).__name__}")
    c = hf.config
    _check_supported(c)
    model = GPTForCausalLM(GPTConfig(
        vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
        dropout=float(c.resid_pdrop), bias=True, layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id))
    sd = _transposed(hf.state_dict())
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    model.load_state_dict(sd, strict=True)
    model.tie_weights()
    return model.to(hf.dtype).train(hf.training)


def to_hf_gpt2(model: GPTForCausalLM) -> GPT2LMHeadModel:
    """A stock transformers GPT2LMHeadModel with this model's weights (loads with no custom code)."""
    if not isinstance(model, GPTForCausalLM):
        raise TypeError(f"expected a gpt_scratch GPTForCausalLM, got {type(model).__name__} (only the GPT has a "
                        "GPT-2 equivalent)")
    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size,
        n_ctx=c.block_size,  # what OpenAI's GPT-2 configs carry, and what llama.cpp's converter reads
        n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout, layer_norm_epsilon=c.layer_norm_epsilon, initializer_range=c.initializer_range,
        activation_function="gelu_new", bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
        tie_word_embeddings=True))
    sd = _transposed(model.state_dict())
    for k, v in hf.state_dict().items():  # GPT-2 always has biases: a bias-free model maps to zero biases
        if k not in sd and k.endswith(".bias"):
            sd[k] = torch.zeros_like(v)
    hf.load_state_dict(sd, strict=True)
    hf.tie_weights()
    return hf.to(next(model.parameters()).dtype).train(model.training)


def _check_model_type(path, expect):
    """Refuse a folder of another model type, pointing at the flag that takes it."""
    model_type = read_config(path).model_type
    if model_type != expect:
        hint = {"gpt_scratch": f"it is already a gpt_scratch GPT; to turn it into stock GPT-2 use --to-hf {path}",
                "gpt2": f"it is a stock transformers GPT-2; to import it into gpt_scratch use --from-hf {path}",
                "gpt_scratch_bigram": "it is gpt_scratch's bigram baseline, which has no GPT-2 equivalent",
                }.get(model_type, f"it holds a {model_type!r} model")
        raise ModelFolderError(f"{path} has model_type {model_type!r}, not {expect!r}: {hint}")


def _check_out(out):
    """--out must be a new or an empty folder: nothing that is there gets overwritten."""
    check_replaceable(out)
    if os.path.isdir(out) and os.listdir(out):
        raise ModelFolderError(f"--out {out} is not empty ({', '.join(sorted(os.listdir(out))[:3])} ...): choose a new "
                               "or empty folder so nothing is overwritten")


def convert(from_hf=None, to_hf=None, out=None):
    """Convert one folder to the other format into `out` (new or empty), written all at once."""
    _check_model_type(from_hf or to_hf, "gpt2" if from_hf else "gpt_scratch")
    _check_out(out)
    save_model_folder(from_hf_gpt2(from_hf) if from_hf else to_hf_gpt2(load_model(to_hf)), out)
    return out


def main(argv=None):
    """Command line: convert a GPT-2 folder between transformers' format and gpt_scratch's.

    The output is written into a staging folder beside --out, fsynced and renamed, so a full
    disk or a kill leaves no half folder and the same command can be run again. Bad input
    exits with code 2, the environment (disk full, permissions) with code 1.
    """
    p = argparse.ArgumentParser(prog="convert_gpt2.py", description=main.__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="a transformers GPT-2 folder (GPT2LMHeadModel) to import")
    src.add_argument("--to-hf", metavar="DIR", help="a gpt_scratch folder to export as stock GPT-2")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (new, or empty)")
    args = p.parse_args(argv)
    print(f"wrote {run_cli(p.prog, convert, args.from_hf, args.to_hf, args.out)}")
    return 0
