"""Everything a user hands the models and their configs is checked here, one rule for each kind of value.

Both model families (GPT and bigram) call the same checks, so they refuse the same
inputs with the same messages: a wrong value raises a ValueError (ConfigError for a
config field) naming what was given, what is wrong and the fix.

Copied next to saved weights with the model and config files (it imports torch,
transformers and its sibling errors.py), so a folder loaded with `trust_remote_code` checks the same way.
"""

import difflib
import os

import torch
from transformers.cache_utils import Cache

from .errors import ConfigError, ModelFolderError

GPT2_EOT = 50256  # GPT-2's <|endoftext|>, the default bos and eos of both configs

# ---------------------------------------------------------------- config fields


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_probability(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_special_token_ids(config):
    """bos/eos/pad must be None or ids inside the vocabulary (eos may be a list of them).

    The defaults are GPT-2's <|endoftext|> (50256). A vocabulary too small to hold it
    (a tiny test model, a toy tokenizer) gets those fields cleared to None rather than
    refused: the default is GPT-2's, not a choice the user made. Any other id outside
    the vocabulary is refused.
    """
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, name)
        ids = value if isinstance(value, list) and name == "eos_token_id" else [value]
        if value == GPT2_EOT and config.vocab_size <= GPT2_EOT:
            setattr(config, name, None)
            continue
        for i in ids:
            if i is not None and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < config.vocab_size):
                raise ConfigError(
                    f"{name} must be None or a token id in [0, {config.vocab_size}), got {value!r}; "
                    f"set it to an id of your vocabulary or to None"
                )


def check_no_misspelt_fields(config, extra_kwargs):
    """A keyword that is not a field but looks like one (n_layers for n_layer) and disagrees with it is a typo.

    Configs carry other keys too (metadata, settings other code reads): only one that is
    close to a field's name and holds another value than that field would be lost silently.
    """
    fields = [f for f in type(config).__dataclass_fields__ if not f.startswith("_")]
    for key, value in extra_kwargs.items():
        if key in fields or key in type(config).attribute_map:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.8)
        if close and getattr(config, close[0]) != value:
            raise ConfigError(
                f"{type(config).__name__} has no setting {key!r} (given {value!r}); did you mean {close[0]!r}?"
            )


# ---------------------------------------------------------------- forward() inputs


def check_model_inputs(config, input_ids, inputs_embeds, attention_mask, cache):
    """The inputs of a forward() call, against the config and each other.

    Returns (past, T): the positions already in the KV cache (0 without one; a tensor for
    a StaticCache while compiling) and the number of new tokens. Under torch.compile only
    what needs no data (shapes, the cache's type) is checked.
    """
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(
            f"cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}; "
            "tuple caches are no longer supported"
        )
    past = cache.get_seq_length() if cache is not None else 0
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must be 2-D (batch, sequence), got shape {tuple(input_ids.shape)}; "
                "for a single sequence add the batch dimension: ids.unsqueeze(0)"
            )
        check_token_ids(input_ids, config.vocab_size)
    B, T = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    if T == 0:
        raise ValueError(
            f"no tokens to run (input of shape {(B, T)}); pass at least one token per sequence "
            f"(to start from nothing, start from <|endoftext|>)"
        )
    if torch.compiler.is_compiling():
        return past, T
    past = int(past)  # a StaticCache counts in a tensor
    S = past + T
    if S > config.block_size:  # generate() checked already
        raise ValueError(
            f"sequence length {S} (past {past} + new {T}) exceeds block_size {config.block_size}; "
            f"crop the input to its last {config.block_size} tokens or generate fewer tokens"
        )
    if attention_mask is not None and attention_mask.ndim == 2 and tuple(attention_mask.shape) != (B, S):
        # (a 4-D mask is already in the attention backend's form: generate() builds one for static caches)
        raise ValueError(
            f"attention_mask must have shape (batch, past + new tokens) = ({B}, {past} + {T}), "
            f"got {tuple(attention_mask.shape)}; give one entry per token of the whole sequence, cached ones included"
        )
    return past, T


def check_labels(labels, ids_shape, vocab_size):
    """Labels are the input ids themselves (shifted inside): the same shape, ids or -100."""
    if tuple(labels.shape) != tuple(ids_shape):
        raise ValueError(
            f"labels must have the shape of the input ids, {tuple(ids_shape)}, got {tuple(labels.shape)}; "
            "labels are the input ids themselves (the shift happens inside), with -100 where no loss is wanted"
        )
    check_token_ids(labels, vocab_size, "labels", allow=(-100,))


def check_token_ids(ids, vocab_size, what="input_ids", allow=()):
    """Token ids (or labels) outside [0, vocab_size) are refused by value; `allow` lists exceptions (-100)."""
    if torch.compiler.is_compiling() or ids.numel() == 0:
        return  # a data-dependent check would break the graph
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{what} must be integer token ids, got a {ids.dtype} tensor")
    bad = (ids < 0) | (ids >= vocab_size)
    for value in allow:
        bad &= ids != value
    if bad.any():
        raise ValueError(
            f"{what} holds {ids[bad][0].item()}, outside the vocabulary [0, {vocab_size})"
            + (" (-100 marks positions without loss)" if allow else "")
            + "; check the tokenizer matches this model"
        )


# ---------------------------------------------------------------- generate() requests


def check_generation_request(model, inputs, generation_config, kwargs):
    """Refuse, before any work, a generate() call that cannot be right.

    Prompt + new tokens past block_size (absolute positions only go that far, so such a
    request raises; nanoGPT's sliding crop would silently recompute the whole window),
    and an attention mask whose shape is not the prompt's.
    """
    prompt = inputs if inputs is not None else kwargs.get("input_ids")
    if not torch.is_tensor(prompt):
        return
    if prompt.ndim != 2:
        raise ValueError(
            f"input_ids must be 2-D (batch, sequence), got shape {tuple(prompt.shape)}; "
            "for a single prompt add the batch dimension: ids.unsqueeze(0)"
        )
    mask = kwargs.get("attention_mask")
    if torch.is_tensor(mask) and mask.ndim == 2 and mask.shape != prompt.shape:
        raise ValueError(
            f"attention_mask must have the prompt's shape {tuple(prompt.shape)}, got {tuple(mask.shape)}; "
            "pass the mask the tokenizer returned with these ids"
        )
    gc = generation_config if generation_config is not None else model.generation_config
    n_prompt, block_size = prompt.shape[1], model.config.block_size
    # generate() gives max_new_tokens precedence over max_length; mirror that order
    max_new = kwargs.get("max_new_tokens", gc.max_new_tokens)
    if max_new is not None and "max_length" not in kwargs:
        total = n_prompt + max_new
    else:
        total = kwargs.get("max_length", gc.max_length)
    if total is not None and total > block_size:
        raise ValueError(
            f"prompt ({n_prompt} tokens) + new tokens = {total} exceeds this model's block_size {block_size}; "
            f"ask for at most {max(block_size - n_prompt, 0)} new tokens or shorten the prompt"
        )


# ---------------------------------------------------------------- weights read by from_pretrained

DIVERGED_HINT = ("this is what a diverged training run leaves (the loss became nan or inf); retrain with a lower "
                 "learning_rate (e.g. half of it) or more warmup_steps, and keep a checkpoint from before it blew up")


def checked_from_pretrained(load, pretrained, args, kwargs):
    """transformers' from_pretrained (`load`), refusing weights that do not fit instead of loading them random.

    Refused with a ModelFolderError naming the file: a weights file that is not complete
    safetensors (cut off, empty, garbage), tensors of another shape than config.json says
    (unless the caller passed ignore_mismatched_sizes=True, which re-initialises them),
    missing or unexpected tensors (unless the caller asked for output_loading_info and so
    judges the report itself), and nan or inf values.
    """
    from safetensors import SafetensorError

    wants_info = kwargs.pop("output_loading_info", False)
    allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
    local = isinstance(pretrained, (str, os.PathLike)) and os.path.isdir(pretrained)
    where = os.path.join(pretrained, "model.safetensors") if local else str(pretrained)
    try:
        model, info = load(pretrained, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except SafetensorError as e:
        raise ModelFolderError(f"{where} is not a complete safetensors file ({e}; a download or copy that was cut off, "
                               "or a disk that filled up while saving); copy it again or re-save the folder") from None
    check_loading_info(where, info, missing_or_unexpected=not wants_info, mismatched=not allow_mismatch)
    check_finite(model.state_dict().items(), where)
    return (model, info) if wants_info else model


def _names(keys, limit=6):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_loading_info(where, info, missing_or_unexpected=True, mismatched=True):
    """Refuse what from_pretrained(output_loading_info=True) reports: missing, unexpected or mis-shaped tensors."""
    problems = []
    if missing_or_unexpected and info.get("missing_keys"):
        problems.append(f"missing {len(info['missing_keys'])} tensor(s) the model needs: {_names(info['missing_keys'])}"
                        " (transformers would fill them with random numbers)")
    if missing_or_unexpected and info.get("unexpected_keys"):
        problems.append(f"{len(info['unexpected_keys'])} tensor(s) this model does not have: "
                        f"{_names(info['unexpected_keys'])}")
    wrong = [f"{k} is {tuple(saved)}, expected {tuple(want)}" for k, saved, want in sorted(info.get("mismatched_keys") or ())]
    if mismatched and wrong:
        problems.append("shapes that do not match config.json: " + "; ".join(wrong[:4]))
    if problems:
        raise ModelFolderError(f"{where} does not fit config.json: " + "; ".join(problems) + ". The weights and the "
                               "config come from different models or the file was cut down; save the folder again "
                               "from the model, or copy both files from the same save")


def check_finite(named_tensors, where):
    """Refuse the first floating tensor holding nan or inf, naming it and how many values."""
    for name, t in named_tensors:
        if t.is_floating_point() and t.numel() and t.device.type != "meta" and not all(
                torch.isfinite(x) for x in torch.aminmax(t.float())):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise ModelFolderError(f"{where}: tensor {name} holds non-finite values ({n_nan} nan, {n_inf} inf of "
                                   f"{t.numel()}); {DIVERGED_HINT}")
