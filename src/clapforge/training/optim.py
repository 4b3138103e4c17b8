"""Optimizer parameter groups and the learning-rate schedule (LAION: Adam(W), warmup then cosine)."""

import math

import torch
from torch import nn

from .recipe import TrainConfig


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # LAION's rule (main.py): no weight decay on biases, norms and the logit scales (all 0-d or 1-d tensors).
    return param.ndim < 2 or "logit_scale" in name or "norm" in name.lower() or name.endswith(".bias")


def parameter_groups(model: nn.Module, cfg: TrainConfig, pretrained_prefixes: tuple[str, ...]) -> list[dict]:
    """Four groups: {new, pretrained} x {decay, no decay}. Frozen parameters are left out."""
    pretrained_lr = cfg.pretrained_lr if cfg.pretrained_lr is not None else cfg.lr
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (name.startswith(pretrained_prefixes), _no_decay(name, param))
        groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "lr": pretrained_lr if pretrained else cfg.lr,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        }
        for (pretrained, no_decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, pretrained_prefixes: tuple[str, ...]) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg, pretrained_prefixes)
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's lr over `warmup_steps`, then cosine decay to 0 (LAION's cosine_lr)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
