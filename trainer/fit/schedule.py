"""The learning-rate schedule of every fit: fastai's one-cycle (warm up, then anneal), by step."""

from __future__ import annotations

import math


def one_cycle(step: int, total: int, lr: float, warm: float = 0.25, div: float = 25.0, final_div: float = 1e4) -> float:
    """fastai-style one-cycle: cosine from lr/div up to lr over ``warm`` of the steps, then cosine to lr/final_div."""
    t = step / max(total - 1, 1)
    if t < warm:
        p = t / warm
        start = lr / div
        return start + (lr - start) * (1 - math.cos(math.pi * p)) / 2
    p = (t - warm) / (1 - warm)
    end = lr / final_div
    return end + (lr - end) * (1 + math.cos(math.pi * p)) / 2
