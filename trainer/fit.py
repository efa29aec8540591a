"""Training loops.

``dot`` uses a hand-fused loop: the forward pass, the gradient of the loss with respect to the
gathered rows (written out by hand, see :func:`_dot_step`) and a *row-sparse* Adam update of only
the rows a batch touched. Why:

* autograd on embedding lookups costs a dense gradient the size of each table per step (or a
  sparse tensor that then has to be coalesced), and dense Adam/AdamW then reads and writes every
  row of every table each step. With 25M ratings (~160K users, ~60K movies) that dense work
  dominates and is proportional to table size, not batch size;
* the hand-written gradient is a handful of fused vector ops per batch and the update
  (``torch.unique`` + ``index_add_`` + gathered Adam moments) costs O(batch x factors).

The loss is ``MSE(rating) + bpr_weight * ranking``. The ranking term (``rank_loss="softmax"``,
the default) is a sampled softmax: each training rating (u, i) is a positive, scored against
``negatives`` movies shared by the whole batch, with logits ``x = a (u·m) + rank_bias[m]``;
``rank_loss="bpr"`` is one-negative BPR (Rendle et al. 2009). The embeddings are shared between
both terms, so ``/recommend`` ranks by the learned factors, ``u·m + rank_bias[m] / a`` (what is
exported as ``rank_bias``); the per-movie ``rank_bias`` absorbs how often a movie is watched,
which ``movie_bias`` (how well it is rated) must not. The defaults (``bpr_weight = 0.45``,
128 shared negatives) rest on three choices, each measured on ML-100K with
``bench/accuracy_dot.py`` (RMSE on a random 10 %, NDCG@10 on each user's latest 20 %; the
previous default, learned a / uniform negatives / weight 0.25, gave 0.895 / 0.131, and weight 1
gave 0.920 / 0.150):

* **fixed scale** ``a = rank_scale = 2`` (the inverse temperature of the softmax, a
  hyper-parameter as in Yi et al. 2019). A *learned* a grows (to 4-10) to sharpen the softmax,
  and since ``dL/d(u·m) = a (p - y)`` that raises the ranking gradients against the rating
  ones: at weight 0.35 with popularity negatives, learned a (~5) gave RMSE 0.902, a = 10 0.924,
  a = 2 0.890. With a fixed at 2 the weight can be about doubled for the same RMSE;
* **popularity-proportional negatives with logQ correction** (``neg_alpha = 0.5``: movie j drawn
  with probability ∝ ``(count_j + 1)^0.5``, its logit lowered by ``log(m q_j)``, Yi et al.
  2019), so the loss still estimates the full softmax while its negatives are the movies most
  often confused with positives: NDCG@10 0.146 -> 0.158 at weight 0.5 (alpha 1 overshoots: 0.092);
* **recency-weighted positives** (``rank_recency = 1.5``): each rating's ranking term weighted by
  ``exp(-1.5 (1 - q))``, q its position in its user's history by time (0 oldest, 1 latest),
  weights normalised to mean 1. "What will they watch next" is closer to what they watched
  last, which is what the latest-20 % protocol measures: at a = 2, weight 0.5, NDCG@10
  0.148 -> 0.161 for +0.0004 RMSE (recency 1).

Defaults, 3 seeds: RMSE 0.8931 (0.8927-0.8936), NDCG@10 0.161 (0.161-0.162).

Tried and not kept (single seed, learned a unless said):

* positives restricted to liked ratings (>= 4), or weighted by ``r - 3`` or ``(r - mean_u)+``
  (``rank_positives``): worse on both metrics than every rating as a positive at the same weight
  (0.5: liked 0.910 / 0.135, graded 0.907 / 0.139, centered 0.911 / 0.134 vs all 0.906 / 0.146).
  Which movies a user watches, not only which they liked, is what helps both: the ranking term
  at a small weight even lowers RMSE (0.905 without it, 0.895 at 0.25), much as SVD++'s implicit
  feedback does;
* masking each user's own rated movies out of the negatives: NDCG 0.159 but RMSE 0.937;
* ranking gradients to the user factors only / the movie factors only: NDCG 0.091 / 0.115;
* 128 factors (0.918 / 0.156 vs 0.912 / 0.158 with 64), 30 epochs (0.924 / 0.155), weight decay
  0.05 or 0.15 (worse RMSE), 256 negatives; a lower learning rate or 15 epochs only move along
  the same trade-off (better RMSE, worse NDCG).

Regularisation is L2 on the rows a sample touches, weighted per occurrence (the classic
matrix-factorisation penalty): popular movies are pulled by many ratings and many penalties.
The learning rate follows a one-cycle schedule (warm up 25 %, cosine down), as fastai does.

``nn`` uses autograd with AdamW (its MLP is dense anyway) and the same loss with the logit as
the ranking score.

Determinism: all randomness (init, permutation, negatives) comes from one ``torch.Generator``
seeded with the training seed; CPU ``index_add_`` and matrix products are deterministic for a
fixed thread count.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from trainer import DivergedError
from trainer.data import Ratings
from trainer.metrics import rmse
from trainer.models import DEFAULT_Y_RANGE, DotProductBias, EmbeddingNN, global_logit


@dataclass
class FitParams:
    """Hyper-parameters of one training run (recorded in the manifest)."""

    model: str = "dot"
    factors: int = 64
    epochs: int = 20
    lr: float = 0.01
    wd: float = 0.1
    batch_size: int = 4096
    bpr_weight: float = 0.45
    rank_loss: str = "softmax"
    negatives: int = 128
    #: Which ratings are positives of the ranking loss and with what weight (see :func:`positive_weights`).
    rank_positives: str = "all"
    #: Ratings at or above this are "liked" (``rank_positives="liked"``); the ranking metrics' threshold.
    liked_at: float = 4.0
    #: User-relative recency of positives: weight ``exp(-rank_recency * (1 - q))``, q = 0 oldest .. 1 latest.
    rank_recency: float = 1.5
    #: Negatives drawn with probability proportional to ``(count + 1) ** neg_alpha`` (0: uniform), logQ-corrected.
    neg_alpha: float = 0.5
    #: Scale a of the ranking logits ``a (u·m) + rank_bias`` (inverse softmax temperature); <= 0: learned.
    rank_scale: float = 2.0
    seed: int = 42
    y_range: tuple[float, float] = DEFAULT_Y_RANGE
    hidden: tuple[int, ...] = (100,)
    init_std: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class History:
    """Per-epoch training loss (MSE and BPR parts) and validation RMSE (when a validation set is given)."""

    loss: list[float] = field(default_factory=list)
    bpr: list[float] = field(default_factory=list)
    valid_rmse: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)


#: ``progress(epoch, n_epochs, loss, valid_rmse_or_None)`` called after every epoch.
Progress = Callable[[int, int, float, float | None], None]


def defaults_for(kind: str) -> FitParams:
    """The default parameters of each model kind (what ``movierec train`` uses without options)."""
    if kind == "dot":
        return FitParams(model="dot")
    if kind == "nn":
        return FitParams(model="nn", factors=32, epochs=8, lr=0.003, wd=0.01, batch_size=1024, bpr_weight=0.5,
                         hidden=(64,))
    raise ValueError(f"unknown model kind {kind!r} (expected dot or nn)")


def set_threads() -> None:
    """Use every core (the loops are vector ops that scale with threads) unless MOVIEREC_TRAIN_THREADS says otherwise.

    The override exists for shared machines: OpenMP threads competing with another busy process
    for the same cores can be several times slower than fewer threads.
    """
    wanted = os.environ.get("MOVIEREC_TRAIN_THREADS", "")
    torch.set_num_threads(int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, os.cpu_count() or 1))


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


def make_model(params: FitParams, n_users: int, n_movies: int, mean_rating: float,
               generator: torch.Generator) -> DotProductBias | EmbeddingNN:
    """A freshly initialised model of ``params.model`` kind."""
    g = global_logit(mean_rating, params.y_range)
    if params.model == "dot":
        return DotProductBias(n_users, n_movies, params.factors, params.y_range, g, params.init_std, generator)
    if params.model == "nn":
        return EmbeddingNN(n_users, n_movies, params.factors, params.hidden, params.y_range, g,
                           init_std=params.init_std, generator=generator)
    raise ValueError(f"unknown model kind {params.model!r} (expected dot or nn)")


def fit(train: Ratings, params: FitParams, valid: Ratings | None = None,
        progress: Progress | None = None) -> tuple[DotProductBias | EmbeddingNN, History]:
    """Train a model of ``params.model`` kind on ``train``; return it and its per-epoch history.

    Raises DivergedError when the loss becomes NaN or infinite (nothing should be published).
    """
    set_threads()
    gen = torch.Generator().manual_seed(params.seed)
    mean = float(train.rating.mean()) if len(train) else 3.5
    model = make_model(params, train.n_users, train.n_movies, mean, gen)
    if params.model == "dot":
        history = _fit_dot(model, train, params, valid, gen, progress)  # type: ignore[arg-type]
    else:
        history = _fit_nn(model, train, params, valid, gen, progress)  # type: ignore[arg-type]
    return model, history


def positive_weights(train: Ratings, params: FitParams) -> np.ndarray:
    """Per-rating weight of its term in the sampled-softmax ranking loss, normalised to mean 1.

    ``rank_positives``:

    * ``all``: every rating is a positive (the model learns what a user watches);
    * ``liked``: only ratings >= ``liked_at`` (what the ranking metrics count as relevant: watched
      *and* liked); a disliked movie is then only ever a sampled negative, so the ranking loss no
      longer pulls ``u·m`` up for movies the rating loss pulls down;
    * ``graded``: ``max(r - liked_at + 1, 0)``: liked movies, 5 stars counting twice a 4;
    * ``centered``: ``max(r - mean_u, 0)``: better than the user's own average.

    ``rank_recency > 0`` multiplies by ``exp(-rank_recency * (1 - q))`` where q is the rating's
    position in its user's history by time (0 oldest, 1 latest). Normalising to mean 1 keeps
    ``bpr_weight`` the average weight per rating whatever the choice.
    """
    r = train.rating.astype(np.float64)
    mode = params.rank_positives
    if mode == "all":
        c = np.ones_like(r)
    elif mode == "liked":
        c = (r >= params.liked_at).astype(np.float64)
    elif mode == "graded":
        c = np.maximum(r - params.liked_at + 1.0, 0.0)
    elif mode == "centered":
        n = np.bincount(train.user, minlength=train.n_users)
        mean_u = np.bincount(train.user, r, train.n_users) / np.maximum(n, 1)
        c = np.maximum(r - mean_u[train.user], 0.0)
    else:
        raise ValueError(f"unknown rank_positives {mode!r} (expected all, liked, graded or centered)")
    if params.rank_recency > 0 and len(r):
        order = np.lexsort((train.movie, train.rated_at, train.user))
        counts = np.bincount(train.user, minlength=train.n_users)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.empty(len(r))
        pos[order] = np.arange(len(r)) - np.repeat(starts, counts)
        q = pos / np.maximum(counts[train.user] - 1, 1)
        c = c * np.exp(-params.rank_recency * (1.0 - q))
    total = c.sum()
    return (c * (len(c) / total) if total > 0 else c).astype(np.float32)


class NegativeSampler:
    """Shared negatives of the sampled softmax: uniform, or popularity-proportional with logQ correction.

    With ``neg_alpha = a > 0`` movie j is drawn with probability ``q_j ∝ (count_j + 1) ** a`` and its
    logit is corrected by ``- log(m q_j)`` (Yi et al. 2019, "sampling-bias-corrected" softmax), so
    the loss still estimates the full softmax over every movie while its negatives are the movies
    most often confused with positives. Uniform sampling needs no correction (it is a constant).
    """

    def __init__(self, train: Ratings, alpha: float) -> None:
        self.n = train.n_movies
        self.q: torch.Tensor | None = None
        self.log_correction: torch.Tensor | None = None
        if alpha > 0:
            q = torch.from_numpy((np.bincount(train.movie, minlength=self.n) + 1.0) ** alpha)
            q = (q / q.sum()).float()
            self.q = q
            self.log_correction = torch.log(q * self.n)

    def draw(self, rows: int, k: int, gen: torch.Generator) -> torch.Tensor:
        if self.q is None:
            return torch.randint(0, self.n, (rows, k), generator=gen)
        return torch.multinomial(self.q, rows * k, replacement=True, generator=gen).view(rows, k)


def negative_sampler(train: Ratings, params: FitParams) -> NegativeSampler:
    return NegativeSampler(train, params.neg_alpha)


class _SparseAdam:
    """Adam on the rows of a table that a batch touched ("lazy Adam"), with per-occurrence L2.

    Rows not in the batch keep their moments untouched, so a step costs O(rows touched), not
    O(table). Duplicated indices are summed first (``unique`` + ``index_add_``), which is exact.
    """

    def __init__(self, table: torch.Tensor, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8) -> None:
        self.table = table
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.b1, self.b2 = betas
        self.eps = eps

    def step(self, index: torch.Tensor, grad: torch.Tensor, lr: float, t: int) -> None:
        rows, inverse = torch.unique(index, return_inverse=True)
        g = torch.zeros((rows.shape[0], *grad.shape[1:]), dtype=grad.dtype).index_add_(0, inverse, grad)
        m = self.m.index_select(0, rows).mul_(self.b1).add_(g, alpha=1 - self.b1)
        v = self.v.index_select(0, rows).mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        update = m.div_(v.div_(c2).sqrt_().add_(self.eps)).mul_(lr / c1)
        self.table.index_add_(0, rows, update, alpha=-1.0)


class _ScalarAdam:
    """Adam for one scalar parameter (the log of the ranking scale)."""

    def __init__(self, value: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 learn: bool = True) -> None:
        self.value, self.m, self.v, self.learn = value, 0.0, 0.0, learn
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, grad: float, lr: float, t: int) -> None:
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        self.value -= lr * (self.m / (1 - self.b1 ** t)) / (math.sqrt(self.v / (1 - self.b2 ** t)) + self.eps)


@torch.no_grad()
def _fit_dot(model: DotProductBias, train: Ratings, params: FitParams, valid: Ratings | None,
             gen: torch.Generator, progress: Progress | None) -> History:
    r = len(train)
    users = torch.from_numpy(train.user)
    movies = torch.from_numpy(train.movie)
    ratings = torch.from_numpy(train.rating)
    uf, mf = model.user_factors.data, model.movie_factors.data
    ub, mb, rb = model.user_bias.data, model.movie_bias.data, model.rank_bias.data
    opts = {name: _SparseAdam(t) for name, t in (("uf", uf), ("mf", mf), ("ub", ub), ("mb", mb), ("rb", rb))}
    # A fixed scale (the inverse temperature of the ranking softmax) unless rank_scale <= 0: learned from 1.
    scale = _ScalarAdam(math.log(params.rank_scale) if params.rank_scale > 0 else 0.0, learn=params.rank_scale <= 0)
    lo, hi = model.y_range
    span, g0 = hi - lo, model.global_bias
    bs = max(1, min(params.batch_size, r))
    steps_per_epoch = math.ceil(r / bs)
    total = steps_per_epoch * params.epochs
    n_movies = train.n_movies
    w, wd = params.bpr_weight, params.wd
    softmax = params.rank_loss == "softmax"
    weights = torch.from_numpy(positive_weights(train, params)) if w > 0 and softmax else None
    if weights is not None and bool((weights == 1).all()):
        weights = None  # every rating a positive with weight 1: skip the per-row multiplications
    sampler = negative_sampler(train, params) if w > 0 and softmax else None
    history = History()
    t = 0
    for epoch in range(params.epochs):
        start = time.perf_counter()
        perm = torch.randperm(r, generator=gen)
        # One gather per epoch, then contiguous slices: cheaper than gathering per batch.
        eu, em, er = users[perm].long(), movies[perm].long(), ratings[perm]
        ec = None if weights is None else weights[perm]
        if w > 0 and softmax:  # params.negatives shared by every rating of a batch
            negatives = sampler.draw(steps_per_epoch, params.negatives, gen)
        elif w > 0:  # one negative per rating
            negatives = torch.randint(0, n_movies, (r,), generator=gen)
        else:
            negatives = None
        loss_sum = bpr_sum = 0.0
        for step, s in enumerate(range(0, r, bs)):
            t += 1
            lr = one_cycle(t - 1, total, params.lr)
            u, m, y = eu[s:s + bs], em[s:s + bs], er[s:s + bs]
            j = None if negatives is None else negatives[step] if softmax else negatives[s:s + bs]
            c = None if ec is None else ec[s:s + bs]
            sq, bp = _dot_step(u, m, y, j, uf, mf, ub, mb, rb, opts, lo, span, g0, w, wd, lr, t, softmax, scale,
                               c, sampler)
            loss_sum += sq
            bpr_sum += bp
        loss = loss_sum / r
        if not math.isfinite(loss) or not math.isfinite(bpr_sum):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: loss is {loss} (try a lower --lr)")
        model.rank_scale = math.exp(scale.value)
        _record(history, model, valid, loss, bpr_sum / r, time.perf_counter() - start, epoch, params.epochs, progress)
    return history


def _dot_step(u: torch.Tensor, m: torch.Tensor, y: torch.Tensor, j: torch.Tensor | None,
              uf: torch.Tensor, mf: torch.Tensor, ub: torch.Tensor, mb: torch.Tensor, rb: torch.Tensor,
              opts: dict[str, _SparseAdam], lo: float, span: float, g0: float, w: float, wd: float,
              lr: float, t: int, softmax: bool = False, scale: _ScalarAdam | None = None,
              c: torch.Tensor | None = None, sampler: NegativeSampler | None = None) -> tuple[float, float]:
    """One minibatch: forward, hand-derived gradients of the mean loss, sparse Adam updates.

    MSE part, with ``p = lo + span * s(z)``, ``z = u·m + b_u + b_m + g``:
    ``dL/dz = 2 (p - y) span s(z)(1 - s(z)) / B``; ``dz/du = m``, ``dz/dm = u``, ``dz/db = 1``.
    BPR part, ``L = w softplus(-x)``, ``x = u·(m_i - m_j) + rb_i - rb_j``:
    ``dL/dx = -w s(-x) / B``; ``dx/du = m_i - m_j``, ``dx/dm_i = u``, ``dx/dm_j = -u``.
    L2: ``wd |row|^2`` per occurrence, gradient ``2 wd row / B``.
    """
    b = u.shape[0]
    pu = uf.index_select(0, u)
    pm = mf.index_select(0, m)
    s = torch.sigmoid((pu * pm).sum(1).add_(ub.index_select(0, u)).add_(mb.index_select(0, m)).add_(g0))
    err = s * span + (lo - y)
    sq = float(err.dot(err))
    dz = err.mul_(s * (1 - s)).mul_(2 * span / b)
    reg = 2 * wd / b
    gu = torch.addcmul(pu * reg, dz.unsqueeze(1), pm)
    gm = torch.addcmul(pm * reg, dz.unsqueeze(1), pu)
    opts["ub"].step(u, dz, lr, t)
    bpr = 0.0
    if j is not None and softmax:
        # Sampled softmax over [positive, shared negatives]: L = w c_i (logsumexp(x) - x_pos) with
        # x = a (u·m) + rb[m] (- log(m q_j) for popularity-sampled negatives) and c_i the rating's
        # positive weight (rows with c_i = 0 are skipped). The learned scale a = exp(log_a) lets
        # the ranking loss sharpen its logits without inflating u·m, which the sigmoid rating
        # prediction needs at its own scale; ranking by x is ranking by u·m + rb/a, which is what
        # is exported as rank_bias.
        a = math.exp(float(scale.value))
        if c is not None and not bool((c > 0).all()):
            rows = torch.nonzero(c > 0).squeeze(1)
            qu, qm, mm, cw = pu.index_select(0, rows), pm.index_select(0, rows), m.index_select(0, rows), c[rows]
        else:
            rows, qu, qm, mm, cw = None, pu, pm, m, c
        dot_pos = (qu * qm).sum(1)
        x_pos = dot_pos * a + rb.index_select(0, mm)
        pj = mf.index_select(0, j)
        dot_neg = qu.mm(pj.t())
        neg_bias = rb.index_select(0, j)
        if sampler is not None and sampler.log_correction is not None:
            neg_bias = neg_bias - sampler.log_correction.index_select(0, j)
        x_neg = (dot_neg * a).add_(neg_bias.unsqueeze(0))
        x_neg.masked_fill_(j.unsqueeze(0) == mm.unsqueeze(1), float("-inf"))  # accidental hits of the positive
        x = torch.cat([x_pos.unsqueeze(1), x_neg], dim=1)
        lse = torch.logsumexp(x, dim=1)
        per_row = lse - x_pos
        bpr = float(per_row.sum() if cw is None else per_row.dot(cw))
        coef = (w / b) if cw is None else cw * (w / b)  # dL/d(logsumexp) per row
        p = torch.exp_(x.sub_(lse.unsqueeze(1)))
        p = p.mul_(coef) if cw is None else p.mul_(coef.unsqueeze(1))  # dL/dx
        d_pos = p[:, 0] - coef
        p_neg = p[:, 1:]
        if scale.learn:
            scale.step(a * (float(d_pos.dot(dot_pos)) + float((p_neg * dot_neg).sum())), lr, t)
        g_u = torch.mul(qm, d_pos.unsqueeze(1)).addmm_(p_neg, pj).mul_(a)
        g_m = torch.mul(qu, d_pos.unsqueeze(1)).mul_(a)
        if rows is None:
            gu.add_(g_u)
            gm.add_(g_m)
        else:  # only the rows with a positive weight took part
            gu.index_add_(0, rows, g_u)
            gm.index_add_(0, rows, g_m)
        gj = p_neg.t().mm(qu).mul_(a)
        opts["mf"].step(torch.cat([m, j]), torch.cat([gm, gj]), lr, t)
        opts["rb"].step(torch.cat([mm, j]), torch.cat([d_pos, p_neg.sum(0)]), lr, t)
    elif j is not None:
        pj = mf.index_select(0, j)
        diff = pm - pj
        x = (pu * diff).sum(1).add_(rb.index_select(0, m)).sub_(rb.index_select(0, j))
        bpr = float(torch.nn.functional.softplus(-x).sum())
        dx = torch.sigmoid(-x).mul_(-w / b)
        gu.addcmul_(dx.unsqueeze(1), diff)
        gm.addcmul_(dx.unsqueeze(1), pu)
        gj = torch.addcmul(pj * reg, dx.unsqueeze(1), pu, value=-1.0)
        opts["mf"].step(torch.cat([m, j]), torch.cat([gm, gj]), lr, t)
        opts["rb"].step(torch.cat([m, j]), torch.cat([dx, -dx]), lr, t)
    else:
        opts["mf"].step(m, gm, lr, t)
    opts["uf"].step(u, gu, lr, t)
    opts["mb"].step(m, dz, lr, t)
    return sq, bpr


def _fit_nn(model: EmbeddingNN, train: Ratings, params: FitParams, valid: Ratings | None,
            gen: torch.Generator, progress: Progress | None) -> History:
    r = len(train)
    users = torch.from_numpy(train.user)
    movies = torch.from_numpy(train.movie)
    ratings = torch.from_numpy(train.rating)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.wd, betas=(0.9, 0.99))
    lo, hi = model.y_range
    bs = max(1, min(params.batch_size, r))
    total = math.ceil(r / bs) * params.epochs
    w = params.bpr_weight
    history = History()
    t = 0
    for epoch in range(params.epochs):
        model.train()
        start = time.perf_counter()
        perm = torch.randperm(r, generator=gen)
        eu, em, er = users[perm].long(), movies[perm].long(), ratings[perm]
        negatives = torch.randint(0, train.n_movies, (r,), generator=gen) if w > 0 else None
        loss_sum = bpr_sum = 0.0
        for s in range(0, r, bs):
            for group in opt.param_groups:
                group["lr"] = one_cycle(t, total, params.lr)
            t += 1
            u, m, y = eu[s:s + bs], em[s:s + bs], er[s:s + bs]
            pu = model.user_factors[u]
            z = model.logit_from(pu, model.movie_factors[m])
            pred = lo + (hi - lo) * torch.sigmoid(z + model.global_bias)
            mse = torch.nn.functional.mse_loss(pred, y)
            loss = mse
            if negatives is not None:
                zj = model.logit_from(pu, model.movie_factors[negatives[s:s + bs]])
                bpr = torch.nn.functional.softplus(zj - z).mean()
                loss = loss + w * bpr
                bpr_sum += float(bpr.detach()) * len(u)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(mse.detach()) * len(u)
        loss_value = loss_sum / r
        if not math.isfinite(loss_value) or not math.isfinite(bpr_sum):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: loss is {loss_value} (try a lower --lr)")
        _record(history, model, valid, loss_value, bpr_sum / r, time.perf_counter() - start, epoch, params.epochs,
                progress)
    return history


def _record(history: History, model: DotProductBias | EmbeddingNN, valid: Ratings | None, loss: float, bpr: float,
            seconds: float, epoch: int, epochs: int, progress: Progress | None) -> None:
    history.loss.append(loss)
    history.bpr.append(bpr)
    history.seconds.append(seconds)
    v = None
    if valid is not None and len(valid):
        v = rmse(model.predict(valid.user, valid.movie), valid.rating)
        history.valid_rmse.append(v)
    if progress is not None:
        progress(epoch + 1, epochs, loss, v)
