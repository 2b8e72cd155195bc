"""Writing a model folder that transformers loads on its own: weights, config, tokenizer."""

import os

from .tokenizer import save_tokenizer


def save_model_folder(model, out_dir):
    """save_pretrained (safetensors, config, generation config, remote-code files) + tokenizer files.

    The tokenizer's model_max_length is the model's block_size, so pipelines
    never feed it more positions than it has.
    """
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors only in 5.x
    save_tokenizer(out_dir, model_max_length=model.config.block_size)
    return out_dir
