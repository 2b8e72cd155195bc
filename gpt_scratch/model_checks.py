"""Input checks both model families run, so the GPT and the bigram refuse the same things the same way.

Copied next to saved weights with the modeling files (it imports only torch).
"""

import torch


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


def check_generation_fits(model, inputs, generation_config, kwargs):
    """Refuse, before any work, a generate() call whose prompt + new tokens would pass block_size.

    Policy: absolute positions only go up to block_size, so such a request raises
    (nanoGPT's sliding crop would silently recompute the whole window).
    """
    prompt = inputs if inputs is not None else kwargs.get("input_ids")
    if not (torch.is_tensor(prompt) and prompt.ndim == 2):
        return
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
