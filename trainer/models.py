"""The two model kinds as torch modules, and their export to the model-store tensors.

* :class:`DotProductBias` (``dot``): fastai's ``DotProductBias`` -- user and movie embeddings and
  biases, ``rating = lo + (hi - lo) * sigmoid(u·m + b_u + b_m + g)`` -- plus a ``rank_bias`` per
  movie learned by the ranking (BPR) part of the loss, so that the ranking score is
  ``u·m + rank_bias[m]`` (see ``movierec.store``).
* :class:`EmbeddingNN` (``nn``): fastai's ``EmbeddingNN`` -- ``concat(u, m)`` through an MLP with
  ReLU, ``rating = lo + (hi - lo) * sigmoid(logit + g)``; the ranking score is
  ``logit + rank_bias[m]``, the per-movie term learned by the ranking loss alone.

``g`` (``global_bias``) is a fixed offset, the logit of the mean training rating in ``y_range``,
so that a freshly initialised model already predicts the mean and biases start at zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_Y_RANGE = (0.0, 5.5)
RATING_SCALE = (0.5, 5.0)


def global_logit(mean: float, y_range: tuple[float, float]) -> float:
    """The logit that makes ``lo + (hi - lo) * sigmoid(logit)`` equal ``mean``."""
    lo, hi = y_range
    p = min(max((mean - lo) / (hi - lo), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class DotProductBias(nn.Module):
    """Biased matrix factorisation with a sigmoid-scaled output and a separate ranking bias."""

    kind = "dot"

    def __init__(self, n_users: int, n_movies: int, factors: int, y_range: tuple[float, float] = DEFAULT_Y_RANGE,
                 global_bias: float = 0.0, init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.y_range = (float(y_range[0]), float(y_range[1]))
        self.global_bias = float(global_bias)
        self.user_factors = nn.Parameter(torch.randn(n_users, factors, generator=generator) * init_std)
        self.movie_factors = nn.Parameter(torch.randn(n_movies, factors, generator=generator) * init_std)
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.movie_bias = nn.Parameter(torch.zeros(n_movies))
        self.rank_bias = nn.Parameter(torch.zeros(n_movies))
        #: Learned scale a of the ranking logits ``a (u·m) + rank_bias``; ranking scores are ``u·m + rank_bias / a``.
        self.rank_scale = 1.0

    @property
    def factors(self) -> int:
        return int(self.user_factors.shape[1])

    def logit(self, user: torch.Tensor, movie: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors[user] * self.movie_factors[movie]).sum(1)
        return dot + self.user_bias[user] + self.movie_bias[movie] + self.global_bias

    def forward(self, user: torch.Tensor, movie: torch.Tensor) -> torch.Tensor:
        """Predicted ratings (not clipped; :meth:`predict` clips to the rating scale)."""
        lo, hi = self.y_range
        return lo + (hi - lo) * torch.sigmoid(self.logit(user, movie))

    def predict(self, user: np.ndarray, movie: np.ndarray, batch: int = 1 << 20) -> np.ndarray:
        """Ratings clipped to the rating scale, as the API computes them."""
        return predict_in_batches(self, user, movie, batch)

    @torch.no_grad()
    def rank_scores(self, users: np.ndarray) -> np.ndarray:
        """``u·m + rank_bias[m] / rank_scale`` for every movie: (len(users), n_movies), as the API ranks."""
        u = self.user_factors[torch.from_numpy(np.asarray(users, dtype=np.int64))]
        return torch.addmm(self.rank_bias.unsqueeze(0) / self.rank_scale, u, self.movie_factors.t()).numpy()

    def export(self) -> dict[str, np.ndarray]:
        """Store tensors (without the id maps), float32 contiguous."""
        return {
            "user_factors": _np(self.user_factors), "movie_factors": _np(self.movie_factors),
            "user_bias": _np(self.user_bias), "movie_bias": _np(self.movie_bias),
            "rank_bias": _np(self.rank_bias / self.rank_scale),
        }


class EmbeddingNN(nn.Module):
    """Embeddings concatenated through an MLP; sigmoid-scaled output."""

    kind = "nn"

    def __init__(self, n_users: int, n_movies: int, factors: int, hidden: tuple[int, ...] = (100,),
                 y_range: tuple[float, float] = DEFAULT_Y_RANGE, global_bias: float = 0.0, dropout: float = 0.0,
                 init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.y_range = (float(y_range[0]), float(y_range[1]))
        self.global_bias = float(global_bias)
        self.user_factors = nn.Parameter(torch.randn(n_users, factors, generator=generator) * init_std)
        self.movie_factors = nn.Parameter(torch.randn(n_movies, factors, generator=generator) * init_std)
        sizes = [2 * factors, *hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        if generator is not None:  # deterministic init independent of the global RNG
            for layer in self.layers:
                bound = 1 / math.sqrt(layer.in_features)
                with torch.no_grad():
                    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                    layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        #: Movie term of the ranking score only (how often a movie is watched), as in ``dot``.
        self.rank_bias = nn.Parameter(torch.zeros(n_movies))

    @property
    def factors(self) -> int:
        return int(self.user_factors.shape[1])

    def logit_from(self, u: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = torch.cat([u, m], dim=1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(torch.relu(x))
        return x.squeeze(1)

    def logit(self, user: torch.Tensor, movie: torch.Tensor) -> torch.Tensor:
        return self.logit_from(self.user_factors[user], self.movie_factors[movie])

    def forward(self, user: torch.Tensor, movie: torch.Tensor) -> torch.Tensor:
        lo, hi = self.y_range
        return lo + (hi - lo) * torch.sigmoid(self.logit(user, movie) + self.global_bias)

    def predict(self, user: np.ndarray, movie: np.ndarray, batch: int = 1 << 18) -> np.ndarray:
        """Ratings clipped to the rating scale, as the API computes them."""
        self.eval()
        return predict_in_batches(self, user, movie, batch)

    def negative_logits(self, u: torch.Tensor, movies: torch.Tensor) -> torch.Tensor:
        """Logits of every (user row of ``u``, movie of ``movies``) pair: (len(u), len(movies)).

        The first layer splits into a user half and a movie half, so it runs once per user and
        once per movie rather than once per pair; the rest of the MLP runs per pair.
        """
        first = self.layers[0]
        k = u.shape[1]
        h = (u @ first.weight[:, :k].t())[:, None, :] + (movies @ first.weight[:, k:].t())[None, :, :] + first.bias
        for layer in self.layers[1:]:
            h = layer(self.dropout(torch.relu(h)))
        return h.squeeze(-1)

    @torch.no_grad()
    def rank_scores(self, users: np.ndarray) -> np.ndarray:
        """``logit + rank_bias`` of every movie for each user: (len(users), n_movies), as the API ranks."""
        self.eval()
        u = self.user_factors[torch.from_numpy(np.asarray(users, dtype=np.int64))]
        return (self.negative_logits(u, self.movie_factors) + self.rank_bias).numpy()

    def export(self) -> dict[str, np.ndarray]:
        """Store tensors: factors, zero rating biases (the store requires them), ``rank_bias``, ``mlp.N.weight/bias``."""
        out = {
            "user_factors": _np(self.user_factors), "movie_factors": _np(self.movie_factors),
            "user_bias": np.zeros(self.user_factors.shape[0], np.float32),
            "movie_bias": np.zeros(self.movie_factors.shape[0], np.float32),
            "rank_bias": _np(self.rank_bias),
        }
        for i, layer in enumerate(self.layers):
            out[f"mlp.{i}.weight"] = _np(layer.weight)
            out[f"mlp.{i}.bias"] = _np(layer.bias)
        return out


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32, copy=True))


def store_tensors(model: DotProductBias | EmbeddingNN, user_ids: np.ndarray, movie_ids: np.ndarray) -> dict[str, Any]:
    """Everything ``ModelStore.publish`` needs as tensors: exported weights plus the id maps."""
    return {"user_ids": np.asarray(user_ids, np.int64), "movie_ids": np.asarray(movie_ids, np.int64),
            **model.export()}


@torch.no_grad()
def predict_in_batches(model: torch.nn.Module, user: np.ndarray, movie: np.ndarray, batch: int) -> np.ndarray:
    """``model(user, movie)`` clipped to the rating scale, ``batch`` pairs at a time (bounded memory)."""
    out = np.empty(len(user), dtype=np.float32)
    for s in range(0, len(user), batch):
        u = torch.from_numpy(np.asarray(user[s:s + batch], dtype=np.int64))
        m = torch.from_numpy(np.asarray(movie[s:s + batch], dtype=np.int64))
        out[s:s + batch] = model(u, m).clamp(*RATING_SCALE).numpy()
    return out
