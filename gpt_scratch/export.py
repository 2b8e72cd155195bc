"""Writing a model folder that transformers loads on its own: weights, config, tokenizer."""

import copy
import os

from .tokenizer import save_tokenizer

# transformers' text-generation pipeline asks for 256 new tokens unless the folder's
# generation_config says otherwise; generate() refuses to run past block_size.
PIPELINE_MAX_NEW_TOKENS = 256


def default_max_new_tokens(block_size):
    """New tokens a folder asks for by default: half the context, at most the pipeline's usual 256.

    Half leaves the other half for the prompt, so `pipeline("text-generation", model=dir)`
    works out of the box on a model with a small block_size.
    """
    return max(1, min(PIPELINE_MAX_NEW_TOKENS, block_size // 2))


def save_model_folder(model, out_dir, state_dict=None):
    """save_pretrained (safetensors, config, generation config, remote-code files) + tokenizer files.

    The tokenizer's model_max_length is the model's block_size, so pipelines
    never feed it more positions than it has. Unless the model's generation
    config already sets a length, the saved one gets
    max_new_tokens = default_max_new_tokens(block_size); the model passed in is
    not modified. `state_dict` replaces the model's own (a full one gathered
    from sharded FSDP training, for instance).
    """
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, state_dict=state_dict)  # safetensors only in 5.x
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.max_new_tokens is None and gen.max_length is None:
        gen = copy.deepcopy(gen)
        gen.max_new_tokens = default_max_new_tokens(model.config.block_size)
        gen._from_model_config = False  # it now holds a setting the model config does not imply
        gen.save_pretrained(out_dir)
    save_tokenizer(out_dir, model_max_length=model.config.block_size)
    return out_dir
