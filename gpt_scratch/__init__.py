"""gpt_scratch: GPT-2 from scratch in PyTorch, as a native Hugging Face transformers model.

Importing the package registers the model with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(dir)` works on folders it saved.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_bigram import BigramConfig
from .configuration_gpt import GPTConfig
from .modeling_bigram import BigramForCausalLM
from .modeling_gpt import GPTForCausalLM, GPTModel
from .tokenizer import load_tiktoken, load_tokenizer, save_tokenizer

# In-process lookup by model_type (no trust_remote_code needed once gpt_scratch is imported).
AutoConfig.register(GPTConfig.model_type, GPTConfig, exist_ok=True)
AutoModel.register(GPTConfig, GPTModel, exist_ok=True)
AutoModelForCausalLM.register(GPTConfig, GPTForCausalLM, exist_ok=True)
# save_pretrained then also writes auto_map and copies the two source files,
# so the folder loads with trust_remote_code=True where gpt_scratch is absent.
GPTConfig.register_for_auto_class()
GPTModel.register_for_auto_class("AutoModel")
GPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
# The bigram baseline, registered the same way.
AutoConfig.register(BigramConfig.model_type, BigramConfig, exist_ok=True)
AutoModelForCausalLM.register(BigramConfig, BigramForCausalLM, exist_ok=True)
BigramConfig.register_for_auto_class()
BigramForCausalLM.register_for_auto_class("AutoModelForCausalLM")

from .folder.convert import from_hf_gpt2, to_hf_gpt2  # noqa: E402
from .folder.model_folder import load_model, save_model_folder  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "GPTConfig", "GPTModel", "GPTForCausalLM", "from_hf_gpt2", "to_hf_gpt2",
    "load_tiktoken", "load_tokenizer", "save_tokenizer", "save_model_folder", "load_model",
    "BigramConfig", "BigramForCausalLM",
]
