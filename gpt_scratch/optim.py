"""Optimizers and learning-rate schedules for training.

- `adamw`: AdamW on everything; weight decay on matrices (matmul weights, embeddings) only.
- `muon`: torch.optim.Muon on the 2-D hidden matrices (attention and MLP weights), AdamW
  on the embeddings, LayerNorms and biases, stepped together as one optimizer
  (`MuonWithAdamW`) so Accelerate prepares, clips, saves and restores it like any other.
  Muon scales its update to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`), so both
  follow the one learning-rate schedule.

Schedules (`lr_at`): `cosine` (linear warm-up, cosine to min_lr at decay_steps) and `wsd`
(warm-up, stable at the peak, then a linear decay to min_lr over the last
`cooldown_fraction` of decay_steps).
"""

import math

import torch


def lr_at(step, cfg):
    """Learning rate for optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if step >= cfg.decay_steps:
        return cfg.min_lr
    if cfg.lr_schedule == "wsd":
        cooldown = max(1, round(cfg.cooldown_fraction * cfg.decay_steps))
        start = cfg.decay_steps - cooldown
        if step < start:
            return cfg.learning_rate
        return cfg.learning_rate + (step - start) / cooldown * (cfg.min_lr - cfg.learning_rate)
    progress = (step - cfg.warmup_steps) / max(1, cfg.decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def _adamw(groups, cfg, device_type):
    kw = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    try:
        # fused: one kernel for all parameters (≈3x faster step measured on CPU)
        return torch.optim.AdamW(groups, fused=device_type in ("cuda", "cpu"), **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kw)


def make_optimizer(model, cfg, device_type):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.optimizer == "muon":
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        hidden = [p for _, p in params if p.dim() == 2 and id(p) not in embeddings]
        rest = [p for _, p in params if p.dim() != 2 or id(p) in embeddings]
        adamw = _adamw([
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ], cfg, device_type)
        muon = torch.optim.Muon(hidden, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                adjust_lr_fn="match_rms_adamw")
        return MuonWithAdamW(muon, adamw)
    return _adamw([
        {"params": [p for _, p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0},
    ], cfg, device_type)


class MuonWithAdamW(torch.optim.Optimizer):
    """Two optimizers over disjoint parameters, seen as one (param_groups, state, state_dict, step)."""

    def __init__(self, muon, adamw):  # noqa: super().__init__ would build groups of its own
        self.parts = (muon, adamw)
        self.defaults = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self):
        return [g for part in self.parts for g in part.param_groups]

    @param_groups.setter
    def param_groups(self, groups):
        pass  # the parts own their groups

    @property
    def state(self):
        return {**self.parts[0].state, **self.parts[1].state}

    @state.setter
    def state(self, value):
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none=True):
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"muon": self.parts[0].state_dict(), "adamw": self.parts[1].state_dict()}

    def load_state_dict(self, state_dict):
        self.parts[0].load_state_dict(state_dict["muon"])
        self.parts[1].load_state_dict(state_dict["adamw"])

    def __repr__(self):
        return f"MuonWithAdamW({self.parts[0]!r}, {self.parts[1]!r})"
