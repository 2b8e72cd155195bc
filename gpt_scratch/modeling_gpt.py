"""GPT-2 written from scratch, as a native transformers model.

Read top to bottom: attention, MLP, block, the transformer body, then the model
with its language-model head. Parameter names are GPT-2's own (transformer.wte,
transformer.h.0.attn.c_attn, lm_head, ...) so OpenAI's weights map by name; only
the four Conv1D weights of the original are stored transposed (see folder/convert.py).

Shapes: B batch, T new tokens, S = past + T keys, C = n_embd, H heads, D = C // H.

Everything device- or library-specific stays behind transformers' interfaces:
the attention function comes from `ALL_ATTENTION_FUNCTIONS` (eager is ours, below),
masks from transformers' masking utilities, the KV cache is any `Cache`. Two
opt-in speed-ups live in sibling modules: lm_head_loss.py (the training loss
without the logits, `skip_logits=True`) and kv_cache.py (a KV cache for CPU
decoding that generate() picks there). input_checks.py refuses bad inputs by name;
transformers_compat.py holds the one name that differs between the transformers
releases this file runs on (5.4-5.25: the KV cache is `past_key_values` before 5.24).

This file is copied next to saved weights for `trust_remote_code` loading, with
the sibling modules it imports (relatively).
"""

import math

import torch
import torch.nn as nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_gpt import GPTConfig
from .input_checks import check_generation_request, check_labels, check_model_inputs, checked_from_pretrained
from .kv_cache import DecodingCache, decoding_cache_for
from .lm_head_loss import lm_head_cross_entropy
from .transformers_compat import accepts_cache_under_either_name, cache_of, causal_mask, output_with_cache


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(q k^T / sqrt(D) + mask) v, written out; returns (B, T, H, D) and the weights.

    `attention_mask` comes from transformers' masking utilities: for eager it is an
    additive float mask (0 where a key may be seen, a large negative number where not).
    """
    att = (query @ key.transpose(-2, -1)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        att = att + attention_mask
    att = torch.softmax(att, dim=-1, dtype=torch.float32).to(query.dtype)
    att = nn.functional.dropout(att, p=dropout, training=module.training)
    y = att @ value  # (B, H, T, D)
    return y.transpose(1, 2).contiguous(), att


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config  # the attention backend is read from it at every call
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.layer_idx = layer_idx  # which slot of the KV cache is ours
        self.is_causal = True  # read by transformers' attention functions
        self.dropout = config.dropout
        # q, k, v for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_proj = True  # gets the depth-scaled init
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            # append this step's keys/values; get back all S of them (or a static cache's slots)
            k, v = cache.update(k, v, self.layer_idx)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        y, weights = attend(
            self, q, k, v, attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # y: (B, T, H, D)
        y = y.reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 was trained with the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_proj = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        # x positional: gradient checkpointing replays the block from its positional arguments
        x = x + self.attn(self.ln_1(x), attention_mask=attention_mask, cache=cache, **kwargs)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class GPTPreTrainedModel(PreTrainedModel):
    config_class = GPTConfig
    config: GPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True  # any function registered in ALL_ATTENTION_FUNCTIONS
    _can_compile_fullgraph = True
    # output_hidden_states / output_attentions are recorded from these modules' outputs
    _can_record_outputs = {
        "hidden_states": Block,
        "attentions": OutputRecorder(CausalSelfAttention, index=1),
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, refusing weights that do not fit (missing, unexpected or mis-shaped
        tensors, a cut-off file, nan) with a ValueError instead of loading them random (input_checks.py)."""
        return checked_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, args, kwargs)

    def _init_weights(self, module):
        # transformers.initialization helpers skip tensors already loaded from a
        # checkpoint, so a partial checkpoint never has its weights overwritten.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_proj", False):
                # GPT-2: scale residual projections by 1/sqrt(number of residual layers)
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class GPTModel(GPTPreTrainedModel):
    """The transformer body: embeddings, blocks and final LayerNorm; returns hidden states."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # the body of a saved GPTForCausalLM leaves its head

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned absolute positions
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    @accepts_cache_under_either_name
    @merge_with_config_defaults
    @capture_outputs
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # shapes, ids in the vocabulary, the cache, past + new within block_size (input_checks.py)
        past, T = check_model_inputs(self.config, input_ids, inputs_embeds, attention_mask, cache)
        if input_ids is not None:
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2 and not torch.compiler.is_compiling():
                # left padding: a sequence's first real token is at position 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = (torch.arange(T, device=inputs_embeds.device) + past).unsqueeze(0)

        # causal, aligned to the cache, and padding: in the form the attention backend wants
        mask = causal_mask(self.config, inputs_embeds, attention_mask, cache, position_ids)
        x = self.drop(inputs_embeds + self.wpe(position_ids))
        for block in self.h:
            x = block(x, attention_mask=mask, cache=cache, position_ids=position_ids, **kwargs)
        x = self.ln_f(x)
        return output_with_cache(BaseModelOutputWithPast, cache if use_cache else None, last_hidden_state=x)


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """GPT-2 with its language-model head (tied to the token embeddings)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, new_embeddings):
        self.transformer.wte = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @accepts_cache_under_either_name
    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep=0, skip_logits=False, loss_vocab_ids=None, **kwargs):
        """`labels` are the input ids themselves (shifted inside); -100 marks positions to ignore.

        `logits_to_keep=n` computes logits for the last n positions only (generate
        asks for 1: the vocabulary projection is the largest matmul of a step).

        `skip_logits=True` (with labels; what the training loop asks for) computes the
        loss without the (batch, seq, vocab) logits, which are then None: faster and
        far smaller in memory (lm_head_loss.py). Otherwise logits are always returned.
        `loss_vocab_ids` (with skip_logits) restricts that loss to the ids a corpus uses,
        for a model whose other embedding rows are zero; it is still the full-vocabulary loss.
        """
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True needs labels: without them there is no loss to compute")
        out = self.transformer(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                               inputs_embeds=inputs_embeds, use_cache=False if skip_logits else use_cache, **kwargs)
        x, cache = out.last_hidden_state, cache_of(out)
        if labels is not None:
            check_labels(labels, x.shape[:2], self.config.vocab_size)
        logits = loss = None
        if skip_logits:
            loss = lm_head_cross_entropy(x, self.lm_head.weight, labels, vocab_ids=loss_vocab_ids, **kwargs)
        else:
            if isinstance(logits_to_keep, int):
                x = x[:, -logits_to_keep:] if logits_to_keep > 0 else x
            else:
                x = x[:, logits_to_keep]
            if isinstance(cache, DecodingCache):
                logits = cache.lm_head(x, self.lm_head.weight)  # the same product, laid out for decoding
            else:
                logits = self.lm_head(x)  # (B, T', vocab)
            if labels is not None:
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return output_with_cache(CausalLMOutputWithPast, cache, loss=loss, logits=logits,
                                 hidden_states=out.hidden_states, attentions=out.attentions)

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' generate(), refusing up front what cannot be right (input_checks.py): a request
        past block_size, a mask of another shape than the prompt."""
        check_generation_request(self, inputs, generation_config, kwargs)
        gc = generation_config if generation_config is not None else self.generation_config
        kwargs = decoding_cache_for(self, gc, kwargs)
        return super().generate(inputs, generation_config=generation_config, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained. Where it writes remote code (the class is registered for an
        Auto class), config.json's auto_map also names the body for AutoModel: vLLM's and SGLang's
        transformers backends build the model from it (and add their own head)."""
        if self._auto_class is not None:
            body = f"{GPTModel.__module__.rsplit('.', 1)[-1]}.{GPTModel.__name__}"  # modeling_gpt.GPTModel
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": body}
        return super().save_pretrained(save_directory, *args, **kwargs)
