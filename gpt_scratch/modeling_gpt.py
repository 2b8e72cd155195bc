"""GPT-2 written from scratch, as a native transformers model.

Read top to bottom: attention, MLP, block, then the model. Parameter names are
GPT-2's own (transformer.wte, transformer.h.0.attn.c_attn, lm_head, ...) so
OpenAI's weights map by name; only the four Conv1D weights of the original are
stored transposed (see convert.py).

Shapes: B batch, T new tokens, S = past + T keys, C = n_embd, H heads, D = C // H.

This file is copied next to saved weights for `trust_remote_code` loading, so it
imports only torch, transformers and its sibling config module (relatively).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_gpt import GPTConfig


def append_to_cache(cache, k, v, layer_idx):
    """`cache.update(k, v, layer_idx)` without copying the whole past at every step.

    transformers' DynamicLayer appends with torch.cat: each new token copies all
    S cached keys and values of every layer. For that layer type (what generate()
    uses by default) the keys live here in a buffer with room to grow, doubled
    when full, and the layer holds a view of its filled part, so an append writes
    only the new positions. The layer's own methods keep working on that view
    (crop slices it; reorder or select make a new tensor, and the next append
    then starts a new buffer). Other caches go through cache.update.
    """
    layer = cache.layers[layer_idx] if layer_idx < len(getattr(cache, "layers", ())) else None
    if (
        type(layer) is not DynamicLayer
        or not layer.is_initialized
        or getattr(cache, "offloading", False)
        or torch.compiler.is_compiling()
    ):
        return cache.update(k, v, layer_idx)
    past_k, past_v = layer.keys, layer.values  # (B, H, S, D)
    S, T = past_k.shape[-2], k.shape[-2]
    buf_k, buf_v = getattr(layer, "_grow_buffers", (None, None))
    ours = buf_k is not None and all(
        past.data_ptr() == buf.data_ptr() and past.stride() == buf.stride() and past.shape[:2] == buf.shape[:2]
        for past, buf in ((past_k, buf_k), (past_v, buf_v))
    )
    if not ours or buf_k.shape[-2] < S + T or buf_k.dtype != k.dtype:
        B, H, _, D = past_k.shape
        capacity = max(2 * (S + T), 64)
        buf_k = k.new_empty(B, H, capacity, D)
        buf_v = v.new_empty(B, H, capacity, v.shape[-1])
        buf_k[:, :, :S] = past_k
        buf_v[:, :, :S] = past_v
        layer._grow_buffers = (buf_k, buf_v)
    buf_k[:, :, S:S + T] = k
    buf_v[:, :, S:S + T] = v
    layer.keys, layer.values = buf_k[:, :, :S + T], buf_v[:, :, :S + T]
    return layer.keys, layer.values


class Linear(nn.Linear):
    """nn.Linear, taking the few-row products of decoding the faster way round on CPU.

    A decoding step multiplies one row per sequence by each weight. For 2 to 64
    rows, MKL computed `x @ W.T` 1.5-3x slower on the project's machine than the
    same product as `(W @ x.T).T` (bench/README.md); the result is returned as a
    transposed view, which the following reshapes, elementwise ops and linears
    read as is. Training, long inputs and one-row steps take nn.Linear's path.
    """

    FEW_ROWS = 64

    def forward(self, x):
        rows = x.numel() // self.in_features
        if (
            1 < rows <= self.FEW_ROWS
            and x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        ):
            xt = x.reshape(rows, self.in_features).t()  # (in, rows)
            if self.bias is None:
                yt = self.weight @ xt
            else:
                yt = torch.addmm(self.bias.unsqueeze(1), self.weight, xt)  # (out, rows)
            return yt.t().reshape(*x.shape[:-1], self.out_features)
        return super().forward(x)


def _transposed_copy(w, rows_per_block=256):
    """w.t().contiguous(), a block of rows at a time: for the small model's lm_head weight
    131 -> 92 ms here (a one-shot transpose of 50,257 rows writes every cache line it
    touches thousands of times apart)."""
    out = w.new_empty(w.shape[1], w.shape[0])
    for start in range(0, w.shape[0], rows_per_block):
        out[:, start:start + rows_per_block].copy_(w[start:start + rows_per_block].t())
    return out


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer_idx = layer_idx  # which slot of the KV cache is ours
        self.dropout = config.dropout
        # q, k, v for all heads in one matmul
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_proj = True  # gets the depth-scaled init
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None, is_causal=True, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            # append this step's keys/values; get back all S of them
            k, v = append_to_cache(cache, k, v, self.layer_idx)  # (B, H, S, D)
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 was trained with the tanh approximation
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_proj = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, is_causal=True, cache=None):
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal, cache=cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPTPreTrainedModel(PreTrainedModel):
    config_class = GPTConfig
    config: GPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _can_compile_fullgraph = False

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

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned absolute positions
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def forward(
        self,
        input_ids=None,
        cache=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,  # the pre-5.x name of `cache`, still accepted
        **kwargs,
    ):
        if cache is None:
            cache = past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            self._check_token_ids(input_ids)
            B, T = input_ids.shape
        else:
            B, T = inputs_embeds.shape[:2]
        device = input_ids.device if input_ids is not None else inputs_embeds.device

        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(
                f"cache must be a transformers Cache (e.g. DynamicCache), got {type(cache).__name__}; "
                "tuple caches are no longer supported"
            )
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        if S > self.config.block_size:
            raise ValueError(
                f"sequence length {S} (past {past} + new {T}) exceeds block_size {self.config.block_size}; "
                f"crop the input to its last {self.config.block_size} tokens or generate fewer tokens"
            )

        if attention_mask is not None:
            if attention_mask.ndim != 2 or attention_mask.shape != (B, S):
                raise ValueError(
                    f"attention_mask must have shape (batch, past + new) = ({B}, {S}), "
                    f"got {tuple(attention_mask.shape)}"
                )
            attention_mask = attention_mask.bool()
            if attention_mask.all():
                attention_mask = None  # no padding: the fast paths below apply

        if position_ids is None:
            if attention_mask is not None:
                # left padding: a sequence's first real token is at position 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            else:
                position_ids = torch.arange(past, S, device=device).unsqueeze(0)  # (1, T)

        # SDPA's own causal mask is aligned top-left, which is only right when
        # queries and keys are the same positions (no cache) and nothing is padded.
        attn_mask, is_causal = None, False
        if attention_mask is None and past == 0:
            is_causal = T > 1
        elif attention_mask is not None or T > 1:
            q_pos = torch.arange(past, S, device=device).view(T, 1)
            k_pos = torch.arange(S, device=device).view(1, S)
            attn_mask = (k_pos <= q_pos).view(1, 1, T, S)  # causal, aligned bottom-right
            if attention_mask is not None:
                attn_mask = attn_mask & attention_mask.view(B, 1, 1, S)  # and not padding
        # else: one new token, no padding: it may see every key, no mask needed

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        x = self.drop(inputs_embeds + self.wpe(position_ids))
        all_hidden = [] if output_hidden_states else None
        for block in self.h:
            if all_hidden is not None:
                all_hidden.append(x)
            x = block(x, attn_mask=attn_mask, is_causal=is_causal, cache=cache)
        x = self.ln_f(x)
        if all_hidden is not None:
            all_hidden.append(x)

        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return out if return_dict is not False else out.to_tuple()

    def _check_token_ids(self, input_ids):
        if torch.compiler.is_compiling():
            return  # a data-dependent check would break the graph
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.config.vocab_size)]
            raise ValueError(
                f"token id {bad[0].item()} is outside the vocabulary [0, {self.config.vocab_size}); "
                "check the tokenizer matches this model"
            )


def _add_product(out, a, b):
    """out += a @ b; in place when the dtypes match (fp32), else through a temporary (bf16 into fp32)."""
    if a.dtype == out.dtype:
        out.addmm_(a, b)
    else:
        out += a @ b


class LMHeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T`, computed without the usual logits graph.

    The usual way writes all (N, vocab) logits, then log-softmax, then in the
    backward pass a zero-filled gradient of the same size and a log-softmax
    backward: five passes over a tensor of N x 50,257 floats (412 MB for 2,048
    tokens). Here the logits become softmax - one_hot in place, and the gradients
    for `hidden` and `weight` are taken from them right away, in the forward pass
    (the loss is the end of the graph, so the backward pass only scales them).

    The work is cut two ways. Rows: `chunk_rows` tokens at a time, so long GPU
    batches never hold more than one chunk of logits. Vocabulary: slices of
    `chunk_vocab` ids, with a running log-sum-exp (a new row maximum rescales the
    sum so far); on the project's CPU the lm_head product ran ~25% faster as slices
    of 4,096 ids than in one piece, and each slice feeds the gradient products.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, n_items, chunk_rows, chunk_vocab):
        # hidden (N, C), weight (V, C), targets (N,) with -100 for "no loss here"
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax and sums: fp32 at least
        valid = targets != -100
        row_scale = (valid.to(acc) / n_items).unsqueeze(1)  # (N, 1): d loss / d row loss
        safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        vocab_starts = range(0, weight.shape[0], chunk_vocab)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t, scale = hidden[rows], safe_targets[rows], row_scale[rows]
            # pass 1, per vocabulary slice: exp(logits - row max so far), the running
            # sum of those, and each row's target logit from the slice that holds it
            top = torch.full_like(scale, float("-inf"))  # (n, 1)
            total = torch.zeros_like(scale)
            target_logit = torch.zeros_like(scale)
            slices = []
            for v0 in vocab_starts:
                logits = (h @ weight[v0:v0 + chunk_vocab].t()).to(acc)  # (n, v)
                inside = (t >= v0) & (t < v0 + logits.shape[1])
                local_t = (t - v0).clamp(0, logits.shape[1] - 1)
                target_logit += torch.where(inside, logits.gather(1, local_t), 0.0)
                new_top = torch.maximum(top, logits.amax(dim=1, keepdim=True))
                total.mul_((top - new_top).exp()).add_(logits.sub_(new_top).exp_().sum(dim=1, keepdim=True))
                top = new_top
                slices.append((v0, logits, new_top, inside, local_t))
            lse = top + total.log()
            loss += ((lse - target_logit) * scale).sum()
            # pass 2: each slice becomes softmax - one_hot = d(row loss)/d logits, then
            # goes straight into the two gradient products
            gh = torch.zeros(h.shape, dtype=acc, device=h.device)
            hs = h * scale.to(h.dtype)
            for v0, probs, slice_top, inside, local_t in slices:
                probs.mul_((slice_top - top).exp() / total)
                probs.scatter_add_(1, local_t, -inside.to(acc))
                g = probs.to(hidden.dtype)
                _add_product(gh, g, weight[v0:v0 + chunk_vocab])
                _add_product(grad_weight[v0:v0 + chunk_vocab], g.t(), hs)
            grad_hidden[rows] = gh * scale
            del slices
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """GPT-2 with its language-model head (tied to the token embeddings)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GPTModel(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self._decoding = False  # True while generate() runs on CPU (see _lm_head)
        self._lm_head_t = None  # (C, vocab) copy of the lm_head weight, only during generate()
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, new_embeddings):
        self.transformer.wte = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

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
        past_key_values=None,
        **kwargs,
    ):
        """`labels` are the input ids themselves (shifted inside); -100 marks positions to ignore.

        `logits_to_keep=n` computes logits for the last n positions only (generate
        asks for 1: the vocabulary projection is the largest matmul of a step).

        With labels and gradients enabled (training), the loss is computed chunk
        by chunk without the (batch, seq, vocab) logits, and `logits` is None;
        under `torch.no_grad()` (evaluation) both loss and logits are returned.
        """
        out = self.transformer(
            input_ids,
            cache=cache if cache is not None else past_key_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        x = out.last_hidden_state
        if labels is not None and torch.is_grad_enabled() and (x.requires_grad or self.lm_head.weight.requires_grad):
            # training: the loss without materialising the logits (returned as None)
            loss = self._chunked_loss(x, labels, **kwargs)
            result = CausalLMOutputWithPast(loss=loss, logits=None, cache=out.cache, hidden_states=out.hidden_states)
            return result if return_dict is not False else result.to_tuple()
        if isinstance(logits_to_keep, int):
            if logits_to_keep > 0:
                x = x[:, -logits_to_keep:]
        else:
            x = x[:, logits_to_keep]
        logits = self._lm_head(x)  # (B, T', vocab)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)

        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states
        )
        return result if return_dict is not False else result.to_tuple()

    def _lm_head(self, x):
        """lm_head(x); one-row decoding steps on CPU go through a transposed weight copy.

        MKL's matrix-vector product read the (vocab, C) weight at ~7 GB/s on the
        project's machine and its (C, vocab) transpose at ~18 GB/s (the small model's
        lm_head: 10.6 -> 5.5 ms a token). The copy is made at the first such step of a
        generate() call and dropped when the call ends, so no weight update can make
        it stale. Several rows take Linear's decoding path instead.
        """
        if self._decoding and x.numel() == x.shape[-1] and not torch.is_grad_enabled():
            if self._lm_head_t is None:
                self._lm_head_t = _transposed_copy(self.lm_head.weight.detach())
            return x @ self._lm_head_t
        return self.lm_head(x).contiguous()  # Linear may return a transposed view

    def _chunked_loss(self, hidden, labels, num_items_in_batch=None, shift_labels=None, **kwargs):
        """The causal-LM loss of transformers' ForCausalLMLoss (shift, ignore -100, mean or
        sum / num_items_in_batch), through LMHeadCrossEntropy."""
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=-100)[:, 1:]  # token t predicts t + 1
        targets = shift_labels.reshape(-1).to(hidden.device)
        n_items = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
        h, w = hidden.reshape(-1, hidden.shape[-1]), self.lm_head.weight
        device_type = h.device.type
        if torch.is_autocast_enabled(device_type):  # the matmuls in the autocast dtype, as nn.Linear would
            dtype = torch.get_autocast_dtype(device_type)
            h, w = h.to(dtype), w.to(dtype)
        # up to 2^27 fp32 logits (512 MB) per chunk of rows: every chunk re-reads the whole
        # lm_head weight and smaller matmuls run slower (2,048 rows in 6 chunks measured 14%
        # slower than in one here), while peak memory on long GPU batches stays bounded
        chunk_rows = max(1, (1 << 27) // self.config.vocab_size)
        # vocabulary slices of 4,096 ids: 2,048 and 8,192 measured no better here, 16,384 and
        # one piece slower (bench/README.md)
        chunk_vocab = 4096
        with torch.autocast(device_type, enabled=False):
            return LMHeadCrossEntropy.apply(h, w, targets, n_items, chunk_rows, chunk_vocab)

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' generate(), refusing up front to run past block_size.

        Policy: absolute positions only go up to block_size, so a request whose
        prompt + new tokens would not fit raises ValueError before any work
        (nanoGPT's sliding crop would silently recompute the whole window).
        """
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if prompt is not None and torch.is_tensor(prompt) and prompt.ndim == 2:
            n_prompt = prompt.shape[1]
            gc = generation_config if generation_config is not None else self.generation_config
            max_new = kwargs.get("max_new_tokens", gc.max_new_tokens)
            if max_new is not None and "max_length" not in kwargs:
                total = n_prompt + max_new
            else:
                total = kwargs.get("max_length", gc.max_length)
            if total is not None and total > self.config.block_size:
                raise ValueError(
                    f"prompt ({n_prompt} tokens) + new tokens = {total} exceeds this model's block_size "
                    f"{self.config.block_size}; ask for at most {max(self.config.block_size - n_prompt, 0)} "
                    "new tokens or shorten the prompt"
                )
        self._decoding = self.lm_head.weight.device.type == "cpu"  # see _lm_head
        try:
            return super().generate(inputs, generation_config=generation_config, **kwargs)
        finally:
            self._decoding, self._lm_head_t = False, None
