"""Kept so `from gpt_scratch.export import ...` still works: model folders now live in model_folder.py."""

from .model_folder import PIPELINE_MAX_NEW_TOKENS, default_max_new_tokens, save_model_folder  # noqa: F401

__all__ = ["PIPELINE_MAX_NEW_TOKENS", "default_max_new_tokens", "save_model_folder"]
