"""gpt_scratch: GPT-2 from scratch in PyTorch, as a native Hugging Face transformers model."""

from .tokenizer import load_tiktoken

__version__ = "0.1.0"
