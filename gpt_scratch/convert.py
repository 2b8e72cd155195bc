"""Weights in and out of transformers' own GPT-2 (GPT2LMHeadModel).

Parameter names are the same on both sides; GPT-2's attention and MLP use a
Conv1D that stores its weight as (in, out), our nn.Linear stores (out, in), so
those four weights are transposed on the way through.
"""

import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .configuration_gpt import GPTConfig
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
        raise ValueError("this GPT-2 variant cannot be converted: " + "; ".join(problems))


def from_hf_gpt2(path_or_model) -> GPTForCausalLM:
    """A GPTForCausalLM with the weights of a transformers GPT-2 (a model or a folder it saved)."""
    if isinstance(path_or_model, (str, os.PathLike)):
        if not os.path.isdir(path_or_model):
            raise FileNotFoundError(f"{path_or_model} is not a folder holding a saved GPT-2 (config.json + weights)")
        hf = GPT2LMHeadModel.from_pretrained(path_or_model)
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
    c = model.config
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
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


def main(argv=None):
    """Command line: convert a GPT-2 folder between transformers' format and gpt_scratch's."""
    import argparse

    from .export import save_model_folder

    p = argparse.ArgumentParser(description=main.__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="a transformers GPT-2 folder (GPT2LMHeadModel) to import")
    src.add_argument("--to-hf", metavar="DIR", help="a gpt_scratch folder to export as stock GPT-2")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not hold a model already)")
    args = p.parse_args(argv)

    in_dir = args.from_hf or args.to_hf
    if not os.path.isfile(os.path.join(in_dir, "config.json")):
        p.error(f"{in_dir} holds no config.json: pass a folder written by save_pretrained")
    if os.path.exists(os.path.join(args.out, "config.json")):
        p.error(f"{args.out} already holds a model; choose an empty --out folder so nothing is overwritten")
    if args.from_hf:
        model = from_hf_gpt2(in_dir)
        save_model_folder(model, args.out)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(in_dir)
        if not isinstance(model, GPTForCausalLM):
            p.error(f"{in_dir} is a {type(model).__name__}, not a gpt_scratch GPT")
        hf = to_hf_gpt2(model)
        hf.save_pretrained(args.out)
        from .tokenizer import save_tokenizer

        save_tokenizer(args.out, model_max_length=model.config.block_size)
    print(f"wrote {args.out}")
