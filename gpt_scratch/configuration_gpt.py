"""Configuration of the gpt_scratch GPT-2 model.

Field names follow nanoGPT (block_size, n_layer, n_head, n_embd, dropout, bias);
`attribute_map` exposes them under the names generic transformers code reads
(hidden_size, num_hidden_layers, ...). Defaults are GPT-2 124M.

This file is copied next to saved weights for `trust_remote_code` loading, so it
imports nothing from gpt_scratch.
"""

from transformers import PretrainedConfig


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class GPTConfig(PretrainedConfig):
    """GPT-2 hyper-parameters. Invalid values raise ValueError naming the field."""

    model_type = "gpt_scratch"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
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
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"choose n_head among the divisors of n_embd"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be true or false, got {self.bias!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be a positive number, got {self.initializer_range!r}")
        super().__post_init__(**kwargs)
