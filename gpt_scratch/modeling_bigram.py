"""A bigram language model: the next token's logits depend only on the current token.

The baseline any trained GPT must beat. It follows the same transformers
contracts as GPTForCausalLM (labels -> loss, logits_to_keep, cache/past_key_values,
attention_mask, generate() refusing to run past block_size, save/load, remote code)
so the same scripts and pipelines drive both.

This file is copied next to saved weights for `trust_remote_code` loading, with
the sibling modules it imports (relatively).
"""

import torch.nn as nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_bigram import BigramConfig
from .input_checks import check_generation_request, check_labels, check_model_inputs, checked_from_pretrained
from .transformers_compat import accepts_cache_under_either_name, output_with_cache


class BigramForCausalLM(PreTrainedModel, GenerationMixin):
    """logits(next | current) = lm_head(wte[current]): a bigram table factored through n_embd.

    Why factored: the textbook bigram model is one vocab x vocab table of logits.
    With GPT-2's 50,257-token vocabulary that is 2.5 billion numbers, ~10 GB in
    fp32, and ~40 GB once AdamW adds gradients and two moments: it cannot train on
    a 24 GB machine. Factoring it as embedding (vocab x n_embd) then projection
    (n_embd x vocab) costs 12.9M parameters at n_embd=256, and the table it
    represents has rank at most n_embd.

    Tying caveat: with `tie_word_embeddings=True` (the default, as in GPT-2) the
    table is wte @ wte.T, which is symmetric, so "a then b" and "b then a" get the
    same score, and each token's score for repeating itself is its squared norm
    (at random init that beats every other score: greedy decoding repeats one
    token). It cannot learn order: a cycle a->b->c->a tops out at probability 1/2
    per step. Set `tie_word_embeddings=False` for a bigram that can.
    """

    config_class = BigramConfig
    config: BigramConfig
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "wte.weight"}
    _can_compile_fullgraph = False

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, refusing weights that do not fit (input_checks.py)."""
        return checked_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, args, kwargs)

    def _init_weights(self, module):
        # transformers.initialization skips tensors already loaded from a checkpoint.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @accepts_cache_under_either_name
    def forward(
        self,
        input_ids=None,
        cache=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        """Same arguments as GPTForCausalLM.forward.

        `position_ids` and the values of `attention_mask` cannot change a bigram's
        logits and are ignored (the mask's shape is still checked). The cache holds
        no keys or values, only how many positions were seen, so generate() can feed
        one token per step and the block_size limit counts the whole sequence.
        """
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # shapes, ids in the vocabulary, the cache, past + new within block_size: the GPT's checks (input_checks.py)
        _, T = check_model_inputs(self.config, input_ids, inputs_embeds, attention_mask, cache)
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B = x.shape[0]
        if labels is not None:
            check_labels(labels, (B, T), self.config.vocab_size)
        if cache is not None:
            # One number per position (a zero-width tensor would read as an empty
            # cache): the cache length advances by T at a cost of 2 floats a token.
            marker = x.new_zeros(B, 1, T, 1)
            cache.update(marker, marker, 0)

        if isinstance(logits_to_keep, int):
            h = x[:, -logits_to_keep:] if logits_to_keep > 0 else x
        else:
            h = x[:, logits_to_keep]
        logits = self.lm_head(h)  # (B, T', vocab)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)

        result = output_with_cache(
            CausalLMOutputWithPast,
            cache if use_cache else None,
            loss=loss,
            logits=logits,
            hidden_states=(x,) if output_hidden_states else None,
        )
        return result if return_dict is not False else result.to_tuple()

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' generate(), refusing up front what cannot be right (input_checks.py): a request
        past block_size, a mask of another shape than the prompt."""
        check_generation_request(self, inputs, generation_config, kwargs)
        return super().generate(inputs, generation_config=generation_config, **kwargs)
