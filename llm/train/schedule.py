"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

Chinchilla (Hoffmann et al. 2022, Sec. 3 and App. B) found that the cosine cycle must match the run's
length (overshooting it by >25% hurts) and decayed the LR by 10×, so the floor is `min_lr_ratio`·lr with
0.1 as the default and the decay ends exactly at the last step.
"""
from __future__ import annotations

import math


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """LR for optimizer step `step` (0-based): (step+1)/warmup·lr during warmup, then cosine reaching
    min_lr_ratio·lr exactly at the last step, total_steps - 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = lr * min_lr_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
