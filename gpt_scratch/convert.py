"""Weights in and out of transformers' own GPT-2 (GPT2LMHeadModel).

Parameter names are the same on both sides; GPT-2's attention and MLP use a
Conv1D that stores its weight as (in, out), our nn.Linear stores (out, in), so
those four weights are transposed on the way through.
"""

import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .configuration_gpt import GPTConfig
from .errors import ModelFolderError, run_cli
from .modeling_gpt import GPTForCausalLM

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _check_supported(hf_config):
    problems = []
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        problems.append(f"n_inner={hf_config.n_inner} (only 4 * n_embd is supported)")
    if hf_config.activation_function not in _TANH_GELUS:
        problems.append(f"activation_function={hf_config.activation_function!r} (only tanh GELU is supported)")
    if not hf_config.scale_attn_weights or hf_config.scale_attn_by_inverse_layer_idx:
        problems.append("non-standard attention scaling")
    if getattr(hf_config, "add_cross_attention", False):
        problems.append("cross-attention")
    if problems:
        raise ModelFolderError("this GPT-2 variant cannot be converted: " + "; ".join(problems) +
                               "; only GPT-2's own architecture maps onto gpt_scratch's GPT")


FROM_HF_INPUT = ("a folder written by transformers' GPT2LMHeadModel.save_pretrained "
                 "(config.json with model_type gpt2 + model.safetensors)")
TO_HF_INPUT = "a gpt_scratch GPT folder (config.json with model_type gpt_scratch + model.safetensors)"


def _check_input_folder(path, expect, what):
    """The config dict of `path`, refusing a missing folder or one of another model type, with the right flag."""
    from .model_folder import read_config_dict

    path = os.fspath(path)
    if not os.path.isdir(path):
        state = "is a file" if os.path.exists(path) else "does not exist"
        raise ModelFolderError(f"{path} {state}: pass {what}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelFolderError(f"{path} holds no config.json: pass {what}")
    model_type = read_config_dict(path)["model_type"]
    if model_type != expect:
        if model_type == "gpt_scratch":
            hint = f"it is already a gpt_scratch GPT; to turn it into stock GPT-2 use --to-hf {path}"
        elif model_type == "gpt2":
            hint = f"it is a stock transformers GPT-2; to import it into gpt_scratch use --from-hf {path}"
        elif model_type == "gpt_scratch_bigram":
            hint = "it is gpt_scratch's bigram baseline, which has no GPT-2 equivalent"
        else:
            hint = f"it holds a {model_type!r} model"
        raise ModelFolderError(f"{path} has model_type {model_type!r}, not {expect!r}: {hint}")


def load_hf_gpt2(path):
    """transformers' GPT2LMHeadModel from a folder, refused (ModelFolderError) when its weights do not fit.

    from_pretrained alone would fill missing tensors with random weights.
    """
    from .model_folder import load_model

    _check_input_folder(path, "gpt2", FROM_HF_INPUT)
    return load_model(path, model_class=GPT2LMHeadModel)  # eval mode, as from_pretrained returns it


def from_hf_gpt2(path_or_model) -> GPTForCausalLM:
    """A GPTForCausalLM with the weights of a transformers GPT-2 (a model or a folder it saved)."""
    if isinstance(path_or_model, (str, os.PathLike)):
        hf = load_hf_gpt2(path_or_model)
    elif isinstance(path_or_model, GPT2LMHeadModel):
        hf = path_or_model
    else:
        raise TypeError(f"expected a GPT2LMHeadModel or a folder path, got {type(path_or_model).__name__}")
    c = hf.config
    _check_supported(c)
    config = GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=float(c.resid_pdrop),
        bias=True,
        layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
    )
    model = GPTForCausalLM(config)
    sd = {}
    for k, v in hf.state_dict().items():
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers of older checkpoints
        sd[k] = v.t().contiguous() if k.endswith(_CONV1D) else v
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
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_ctx=c.block_size,  # what OpenAI's GPT-2 configs carry, and what llama.cpp's converter reads
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range,
        activation_function="gelu_new",
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=True,
    )
    hf = GPT2LMHeadModel(hf_config)
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = v.t().contiguous() if k.endswith(_CONV1D) else v
    # GPT-2 always has biases: a bias-free model maps to zero biases.
    for k, v in hf.state_dict().items():
        if k not in sd:
            if not k.endswith(".bias"):
                raise KeyError(f"no weight for {k} in the gpt_scratch model")
            sd[k] = torch.zeros_like(v)
    hf.load_state_dict(sd, strict=True)
    hf.tie_weights()
    return hf.to(next(model.parameters()).dtype).train(model.training)


def _check_out(out):
    """--out must be a new or an empty folder: nothing that is there gets overwritten."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise ModelFolderError(f"--out {out} is a file, not a folder: choose a new folder name")
    if os.path.exists(os.path.join(out, "config.json")):
        raise ModelFolderError(f"{out} already holds a model; choose an empty --out folder so nothing is overwritten")
    if os.listdir(out):
        raise ModelFolderError(f"--out {out} is not empty ({', '.join(sorted(os.listdir(out))[:3])} ...): choose a "
                               "new or empty folder so nothing is overwritten")


def main(argv=None):
    """Command line: convert a GPT-2 folder between transformers' format and gpt_scratch's.

    The output is written into a temporary folder beside --out, fsync'ed and renamed, so a
    full disk or a kill leaves no half folder and the same command can simply be run again.
    Bad input exits with code 2, the environment (disk full, permissions) with code 1.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line of output when all goes well
    return run_cli("convert_gpt2.py", _main, argv)


def _main(argv):
    import argparse

    from .model_folder import load_model, save_model_folder, write_folder
    from .tokenizer import save_tokenizer

    p = argparse.ArgumentParser(prog="convert_gpt2.py", description=main.__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="a transformers GPT-2 folder (GPT2LMHeadModel) to import")
    src.add_argument("--to-hf", metavar="DIR", help="a gpt_scratch folder to export as stock GPT-2")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (new, or empty)")
    args = p.parse_args(argv)

    in_dir = args.from_hf or args.to_hf
    _check_input_folder(in_dir, "gpt2" if args.from_hf else "gpt_scratch",
                        FROM_HF_INPUT if args.from_hf else TO_HF_INPUT)
    _check_out(args.out)
    if args.from_hf:
        model = from_hf_gpt2(in_dir)
        save_model_folder(model, args.out)
    else:
        model = load_model(in_dir)
        if not isinstance(model, GPTForCausalLM):
            raise ModelFolderError(f"{in_dir} is a {type(model).__name__}, not a gpt_scratch GPT")
        hf = to_hf_gpt2(model)

        def write(tmp):
            hf.save_pretrained(tmp)
            save_tokenizer(tmp, model_max_length=model.config.block_size)

        write_folder(args.out, write)
    print(f"wrote {args.out}")
    return 0
