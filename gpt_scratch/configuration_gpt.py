"""Configuration of the gpt_scratch GPT-2 model.

Field names follow nanoGPT (block_size, n_layer, n_head, n_embd, dropout, bias);
`attribute_map` exposes them under the names generic transformers code reads
(hidden_size, num_hidden_layers, ...). Defaults are GPT-2 124M.

This file is copied next to saved weights for `trust_remote_code` loading, with
the sibling modules it imports (input_checks.py, errors.py).
"""

from transformers import PretrainedConfig

from .errors import ConfigError
from .input_checks import (
    check_bool,
    check_no_misspelt_fields,
    check_positive_int,
    check_positive_number,
    check_probability,
    check_special_token_ids,
)


class GPTConfig(PretrainedConfig):
    """GPT-2 hyper-parameters. Invalid values raise ConfigError (a ValueError) naming the field."""

    model_type = "gpt_scratch"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
        "layer_norm_eps": "layer_norm_epsilon",
    }

    vocab_size: int = 50257
    block_size: int = 1024  # longest sequence the position table covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # one rate for embeddings, attention and residuals, as in nanoGPT
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    # The 5.x base config no longer declares these; without them tying silently does not happen.
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        check_no_misspelt_fields(self, kwargs)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"choose n_head among the divisors of n_embd"
            )
        check_probability("dropout", self.dropout)
        check_bool("bias", self.bias)
        check_positive_number("layer_norm_epsilon", self.layer_norm_epsilon)
        check_positive_number("initializer_range", self.initializer_range)
        check_special_token_ids(self)
        super().__post_init__(**kwargs)
