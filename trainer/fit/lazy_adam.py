"""Row-sparse ("lazy") Adam on a torch table, on any device: the optimiser of the torch ``dot`` engine.

The same semantics as the numba engine's :class:`trainer.fit.optim.LazyAdam`: only the rows a
batch touched move, with the gradients of a row that occurs several times summed first; rows
not touched keep their weights *and* their moments. Columns from ``tail_from`` on (the movie
bias) move only in rows that one of the first ``tail_limit`` occurrences touched (the
positives: a sampled negative has no gradient there and must not decay its moments).

Why lazy rather than dense (fused) Adam: dense Adam moves every row every step through its
moments, so a movie nobody rated in this batch still drifts; that is a different optimiser, and
the torch engine is held to the numba engine's quality on the same data and seed (tests). Two
implementations of the one rule, chosen by device:

* ``sparse`` (CPU): ``unique`` of the touched rows, update only those: O(rows touched);
* ``dense`` (GPU): gradients summed into a table-sized buffer and a 0/1 row mask, then one
  masked update of the whole table. O(table) per step, but free of the host synchronisation
  ``unique`` costs on a GPU (its output size is data-dependent), and a table pass is cheap
  there: 160K x 65 floats is ~40 MB, about 0.1 ms of an H200's bandwidth for the ~7 passes.
"""

from __future__ import annotations

import torch

MODES = ("sparse", "dense")


class RowAdam:
    """Lazy Adam state (moments) for one table; :meth:`step` applies one update in place."""

    def __init__(self, table: torch.Tensor, mode: str = "sparse", betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
        self.table, self.mode = table, mode
        self.m1 = torch.zeros_like(table)
        self.m2 = torch.zeros_like(table)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, index: torch.Tensor, grad: torch.Tensor, lr: float, t: int, tail_from: int | None = None,
             tail_limit: int = 0) -> None:
        """Apply the summed ``grad`` rows (``grad[i]`` belongs to row ``index[i]``) at step ``t`` (from 1)."""
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        width = self.table.shape[1]
        tail = None if tail_from is None or tail_from >= width else (tail_from, tail_limit)
        if self.mode == "sparse":
            self._sparse(index, grad, lr / c1, c2, tail)
        else:
            self._dense(index, grad, lr / c1, c2, tail)

    def _update(self, w: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, g: torch.Tensor, mask: torch.Tensor,
                step: float, c2: float) -> None:
        """Adam on rows ``w`` where ``mask`` is 1 (in place); where it is 0 nothing changes."""
        m1.add_((g - m1).mul_(mask * (1 - self.b1)))
        m2.add_((g * g - m2).mul_(mask * (1 - self.b2)))
        w.sub_((m1 / (m2 / c2).sqrt_().add_(self.eps)).mul_(mask * step))

    def _mask(self, rows: int, touched: torch.Tensor, positive: torch.Tensor | None, tail_from: int) -> torch.Tensor:
        width = self.table.shape[1]
        if positive is None:
            return touched.unsqueeze(1)
        mask = touched.unsqueeze(1).expand(rows, width).clone()
        mask[:, tail_from:] = positive.unsqueeze(1)
        return mask

    def _sparse(self, index: torch.Tensor, grad: torch.Tensor, step: float, c2: float,
                tail: tuple[int, int] | None) -> None:
        rows, inverse = torch.unique(index, return_inverse=True)
        n = rows.shape[0]
        acc = torch.zeros((n, grad.shape[1]), dtype=grad.dtype, device=grad.device).index_add_(0, inverse, grad)
        positive = None
        if tail is not None:
            positive = torch.zeros(n, dtype=grad.dtype, device=grad.device)
            positive[inverse[:tail[1]]] = 1.0
        mask = self._mask(n, torch.ones(n, dtype=grad.dtype, device=grad.device), positive,
                          tail[0] if tail else 0)
        w, m1, m2 = self.table[rows], self.m1[rows], self.m2[rows]
        self._update(w, m1, m2, acc, mask, step, c2)
        self.table[rows], self.m1[rows], self.m2[rows] = w, m1, m2

    def _dense(self, index: torch.Tensor, grad: torch.Tensor, step: float, c2: float,
               tail: tuple[int, int] | None) -> None:
        n = self.table.shape[0]
        acc = torch.zeros_like(self.table).index_add_(0, index, grad)
        touched = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_fill_(0, index, 1.0)
        positive = None
        if tail is not None:
            positive = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_fill_(0, index[:tail[1]], 1.0)
        self._update(self.table, self.m1, self.m2, acc, self._mask(n, touched, positive, tail[0] if tail else 0),
                     step, c2)
