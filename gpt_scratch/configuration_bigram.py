"""Configuration of the gpt_scratch bigram baseline.

A bigram model has no layers and no positions: `block_size` is only the longest
context it accepts, kept so the bigram obeys the same length contract as the GPT
(and so tokenizers and pipelines get the same limit).

This file is copied next to saved weights for `trust_remote_code` loading, so it
imports nothing from gpt_scratch.
"""

from transformers import PretrainedConfig


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class BigramConfig(PretrainedConfig):
    """Bigram hyper-parameters. Invalid values raise ValueError naming the field."""

    model_type = "gpt_scratch_bigram"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "block_size",
    }

    vocab_size: int = 50257
    n_embd: int = 256  # width of the factorisation vocab -> n_embd -> vocab
    block_size: int = 1024  # longest sequence accepted (there are no position embeddings)
    initializer_range: float = 0.02
    # The 5.x base config no longer declares these; without them tying silently does not happen.
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None

    # DynamicCache(config=...) sizes itself from num_hidden_layers. The bigram keeps a
    # single, empty cache layer whose length only counts the positions seen so far.
    # A read-only property, not a field: it is never saved or set from config.json.
    @property
    def num_hidden_layers(self):
        return 1

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "n_embd", "block_size"):
            _check_positive_int(name, getattr(self, name))
        if (
            isinstance(self.initializer_range, bool)
            or not isinstance(self.initializer_range, (int, float))
            or self.initializer_range <= 0
        ):
            raise ValueError(f"initializer_range must be a positive number, got {self.initializer_range!r}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, list) and name == "eos_token_id" else [value]  # eos may be a list
            for i in ids:
                if i is not None and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size):
                    raise ValueError(f"{name} must be None or a token id in [0, {self.vocab_size}), got {value!r}")
        super().__post_init__(**kwargs)
