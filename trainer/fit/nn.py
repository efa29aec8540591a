"""The ``nn`` step: autograd and AdamW, the same loss as ``dot`` on the MLP's logit.

Autograd here because the MLP is dense anyway (every step updates all of its weights), so the
row-sparse machinery of ``dot`` would buy little. The ranking term is ``dot``'s sampled softmax
over shared negatives (logQ-corrected, weighted positives) on ``logit + rank_bias``, the
negatives' logits from :meth:`EmbeddingNN.negative_logits`; or one-negative BPR on the logit.
"""

from __future__ import annotations

import torch

from trainer.data import Ratings
from trainer.fit.loop import cpu_permutation
from trainer.fit.params import FitParams
from trainer.fit.sampling import Ranking, ranked_rows
from trainer.models import EmbeddingNN


class NNStep:
    """The ``nn`` step as the epoch loop drives it (:class:`trainer.fit.loop.Step`)."""

    def __init__(self, model: EmbeddingNN, train: Ratings, params: FitParams, ranking: Ranking) -> None:
        self.model, self.ranking = model, ranking
        self.users = torch.from_numpy(train.user)
        self.movies = torch.from_numpy(train.movie)
        self.ratings = torch.from_numpy(train.rating)
        weights = ranking.positive_weights
        self.weights = None if weights is None else torch.from_numpy(weights)
        # Frozen embeddings (trainer.fit.init) have requires_grad False: only the rest learns.
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.wd, betas=(0.9, 0.99))
        # The epoch's ratings in its order (begin_epoch), and its negatives.
        self.user = self.movie = self.rating = torch.empty(0)
        self.weight: torch.Tensor | None = None
        self.negatives: torch.Tensor | None = None

    def permutation(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return cpu_permutation(n, gen)

    def begin_epoch(self, order: torch.Tensor, negatives: torch.Tensor | None) -> None:
        self.model.train()
        self.user, self.movie, self.rating = self.users[order].long(), self.movies[order].long(), self.ratings[order]
        self.weight = None if self.weights is None else self.weights[order]
        self.negatives = negatives

    def __call__(self, batch: int, rows: slice, lr: float, t: int) -> tuple[float, float]:
        model, ranking = self.model, self.ranking
        for group in self.opt.param_groups:
            group["lr"] = lr
        u, m, y = self.user[rows], self.movie[rows], self.rating[rows]
        lo, hi = model.y_range
        pu = model.user_factors[u]
        z = model.logit_from(pu, model.movie_factors[m])
        pred = lo + (hi - lo) * torch.sigmoid(z + model.global_bias)
        mse = torch.nn.functional.mse_loss(pred, y)
        loss = mse
        rank_sum = 0.0
        if ranking.loss == "softmax":
            # Scale 1: the logit is already the model's own scale. Only the first n_rank ratings
            # of the (random) batch take part: each (rating, negative) pair runs the MLP.
            j = self.negatives[batch]
            n_rank = ranked_rows(ranking.fraction, len(u))
            mr = m[:n_rank]
            x_pos = z[:n_rank] + model.rank_bias[mr]
            x_neg = model.negative_logits(pu[:n_rank], model.movie_factors[j]) + model.rank_bias[j]
            if ranking.sampler.log_correction is not None:
                x_neg = x_neg - ranking.sampler.log_correction[j]
            x_neg = x_neg.masked_fill(j.unsqueeze(0) == mr.unsqueeze(1), float("-inf"))
            per_row = torch.logsumexp(torch.cat([x_pos.unsqueeze(1), x_neg], 1), 1) - x_pos
            rank = (per_row if self.weight is None else per_row * self.weight[rows][:n_rank]).mean()
            loss = loss + ranking.weight * rank
            rank_sum = float(rank.detach()) * len(u)
        elif ranking.loss == "bpr":
            zj = model.logit_from(pu, model.movie_factors[self.negatives[rows]])
            bpr = torch.nn.functional.softplus(zj - z).mean()
            loss = loss + ranking.weight * bpr
            rank_sum = float(bpr.detach()) * len(u)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(mse.detach()) * len(u), rank_sum

    def end_epoch(self) -> None:
        pass

    def finish(self) -> None:
        pass
