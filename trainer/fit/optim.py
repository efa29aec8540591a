"""The ``dot`` step's optimisers: Adam on only the table rows a batch touched, and Adam on one scalar.

Why not ``torch.optim``: dense Adam reads and writes every row of every table each step, which
at 25M ratings (~160K users, ~60K movies) costs in proportion to the tables, not the batch; a
row-sparse update costs in proportion to the rows the batch touched. The update itself is a
compiled kernel (:func:`trainer.kernels.adam_rows`); these classes hold its state.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from trainer import hugepages
from trainer import kernels as K

f32 = np.float32


class LazyAdam:
    """Adam on the rows of a table that a batch touched ("lazy Adam"), with per-occurrence L2.

    Rows not in the batch keep their moments untouched, so a step costs O(rows touched), not
    O(table). Gradients of a row that occurs several times in a batch are summed first, which
    is exact (:func:`trainer.kernels.adam_rows`).
    """

    def __init__(self, table: np.ndarray, capacity: int, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        self.table = table
        self.m1 = hugepages.zeros(table.shape)
        self.m2 = hugepages.zeros(table.shape)
        self.m1.fill(0.0)  # touch the pages now (set-up), not during the first epoch
        self.m2.fill(0.0)
        self.acc = np.empty((capacity, table.shape[1]), np.float32)
        #: Per table row: -1, or during a step the position of the row's first occurrence in the batch.
        self.slot = hugepages.zeros((table.shape[0],), np.int64)
        self.slot.fill(-1)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, index: np.ndarray, grad: np.ndarray, lr: float, t: int, tail_from: int | None = None,
             tail_limit: int = 0) -> None:
        """``grad[i]`` is row ``index[i]``'s; columns from ``tail_from`` on only in rows that the first
        ``tail_limit`` occurrences touched."""
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        width = self.table.shape[1]
        K.adam_rows(self.table, self.m1, self.m2, grad, self.acc, index, self.slot, f32(self.b1), f32(self.b2),
                    f32(lr / c1), f32(c2), f32(self.eps), width if tail_from is None else tail_from,
                    index.shape[0] if tail_from is None else tail_limit, numba.get_num_threads())


class ScalarAdam:
    """Adam for one scalar parameter (the log of the ranking scale); ``learn=False`` holds it fixed."""

    def __init__(self, value: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 learn: bool = True) -> None:
        self.value, self.m, self.v, self.learn = value, 0.0, 0.0, learn
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, grad: float, lr: float, t: int) -> None:
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        self.value -= lr * (self.m / (1 - self.b1 ** t)) / (math.sqrt(self.v / (1 - self.b2 ** t)) + self.eps)
