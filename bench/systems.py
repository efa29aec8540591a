"""The systems compared, behind one interface.

A system is fitted on a training :class:`~bench.common.Triples` with a seed, then

* ``predict(users, movies)`` -> predicted ratings (``None`` for ranking-only systems), and
* ``score(users)`` -> (len(users), n_movies) ranking scores (``None`` for rating-only systems).

Surprise models are scored for ranking with their own prediction formula evaluated for every
movie at once (numpy); :func:`check_surprise_scores` compares that with ``algo.estimate`` on a
sample of pairs, so the vectorised scores are the library's predictions (unclipped, so that
ties at the top of the rating scale do not decide the order).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.common import Triples

# ----------------------------------------------------------------------------------- baselines


class System:
    name = "?"
    config = ""
    deterministic = False
    rating = True
    ranking = True

    def fit(self, train: Triples, seed: int) -> System:
        raise NotImplementedError

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray | None:
        return None

    def score(self, users: np.ndarray) -> np.ndarray | None:
        return None

    def fold_in(self, given: Triples, users: np.ndarray) -> np.ndarray | None:
        """Ranking scores of users absent from training, from their ``given`` ratings only (the
        cold-user protocol); None when the system cannot place a new user."""
        return None


class GlobalMean(System):
    name, config, deterministic, ranking = "global mean", "mean training rating", True, False

    def fit(self, train: Triples, seed: int) -> GlobalMean:
        self.mu = float(train.rating.mean())
        return self

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.mu)


class Popularity(System):
    name, config, deterministic, rating = "popularity", "number of training ratings per movie", True, False

    def fit(self, train: Triples, seed: int) -> Popularity:
        self.counts = np.bincount(train.movie, minlength=train.n_movies).astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts)))

    def fold_in(self, given: Triples, users: np.ndarray) -> np.ndarray:
        return self.score(users)


class ItemItem(System):
    """EASE (Steck 2019) or item-kNN cosine on the binary matrix of training ratings
    (:mod:`trainer.itemitem`); a new user is scored from their given ratings, no refit needed."""

    rating = False
    deterministic = True

    def __init__(self, method: str, param: float) -> None:
        self.method, self.param = method, param
        if method == "ease":
            self.name, self.config = "EASE", f"closed form, lambda {param:g} (tuned on the tuning folds)"
        else:
            self.name, self.config = "item-kNN cosine", f"binary cosine, {int(param)} neighbours per movie"

    def fit(self, train: Triples, seed: int) -> ItemItem:
        from trainer.itemitem import cosine_knn, ease

        build = ease if self.method == "ease" else cosine_knn
        arg = float(self.param) if self.method == "ease" else int(self.param)
        self.matrix = build(train.user, train.movie, train.n_users, train.n_movies, arg)
        self.train = train
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        from trainer.itemitem import user_item_scores

        return user_item_scores(self.matrix, self.train.user, self.train.movie, users)

    def fold_in(self, given: Triples, users: np.ndarray) -> np.ndarray:
        from trainer.itemitem import user_item_scores

        return user_item_scores(self.matrix, given.user, given.movie, users)


# ------------------------------------------------------------------------------------ Surprise


class SurpriseSystem(System):
    """A scikit-surprise algorithm; raw ids are our dense indices."""

    def __init__(self, name: str, factory: Any, config: str, deterministic: bool = False) -> None:
        self.name, self.factory, self.config, self.deterministic = name, factory, config, deterministic

    def fit(self, train: Triples, seed: int) -> SurpriseSystem:
        self.trainset = build_trainset(train)
        self.algo = self.factory(seed)
        self.algo.fit(self.trainset)
        self.n_users, self.n_movies = train.n_users, train.n_movies
        self._inner_maps()
        return self

    def _inner_maps(self) -> None:
        ts = self.trainset
        self.u_in = np.full(self.n_users, -1, np.int64)
        self.i_in = np.full(self.n_movies, -1, np.int64)
        for raw, inner in ts._raw2inner_id_users.items():
            self.u_in[raw] = inner
        for raw, inner in ts._raw2inner_id_items.items():
            self.i_in[raw] = inner

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        algo = self.algo
        return np.array([algo.predict(int(u), int(i)).est for u, i in zip(users, movies, strict=True)])

    def score(self, users: np.ndarray) -> np.ndarray:
        return surprise_scores(self.algo, self.trainset, self.u_in, self.i_in, users)


def build_trainset(train: Triples) -> Any:
    """Surprise's own ``Dataset.construct_trainset`` on (user, movie, rating, None) tuples."""
    from surprise import Dataset, Reader

    lo, hi = float(train.rating.min()), float(train.rating.max())
    ds = Dataset(Reader(rating_scale=(lo, hi)))
    raw = list(zip(train.user.tolist(), train.movie.tolist(), train.rating.astype(np.float64).tolist(),
                   [None] * len(train), strict=True))
    return ds.construct_trainset(raw)


def _global_parts(algo: Any, ts: Any, u_in: np.ndarray, i_in: np.ndarray, users: np.ndarray) -> tuple:
    ku = u_in[users]
    ki = i_in
    known_u = ku >= 0
    known_i = ki >= 0
    return ku, ki, known_u, known_i


def surprise_scores(algo: Any, ts: Any, u_in: np.ndarray, i_in: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Unclipped ``algo.estimate`` for every (user in users, movie) pair, vectorised."""
    from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp

    mu = ts.global_mean
    ku, ki, known_u, known_i = _global_parts(algo, ts, u_in, i_in, users)
    n_m = len(i_in)
    out = np.full((len(users), n_m), mu, np.float64)
    if isinstance(algo, (BaselineOnly, KNNBaseline)):
        bu, bi = algo.bu, algo.bi
    elif isinstance(algo, (SVD, SVDpp)):
        bu, bi = algo.bu, algo.bi
    else:
        raise TypeError(f"no vectorised scorer for {type(algo).__name__}")
    bu_rows = np.where(known_u, bu[np.maximum(ku, 0)], 0.0)
    bi_cols = np.where(known_i, bi[np.maximum(ki, 0)], 0.0)
    if isinstance(algo, SVD) and not algo.biased:
        bu_rows, bi_cols, out[:] = 0.0 * bu_rows, 0.0 * bi_cols, 0.0
    out += bu_rows[:, None] + bi_cols[None, :]
    both = known_u[:, None] & known_i[None, :]
    if isinstance(algo, SVD):
        dot = algo.pu[np.maximum(ku, 0)] @ algo.qi[np.maximum(ki, 0)].T
        out += np.where(both, dot, 0.0)
    elif isinstance(algo, SVDpp):
        rows = []
        for inner in ku:
            if inner < 0:
                rows.append(np.zeros(algo.pu.shape[1]))
                continue
            items = [j for j, _ in ts.ur[inner]]
            rows.append(algo.pu[inner] + algo.yj[items].sum(0) / math.sqrt(len(items)))
        dot = np.asarray(rows) @ algo.qi[np.maximum(ki, 0)].T
        out += np.where(both, dot, 0.0)
    elif isinstance(algo, KNNBaseline):
        if algo.sim_options.get("user_based", True):
            raise TypeError("vectorised KNNBaseline scorer implements item-based similarities only")
        sim, k, min_k = algo.sim, algo.k, algo.min_k
        for row, inner in enumerate(ku):
            if inner < 0:
                continue
            rated = ts.ur[inner]
            j = np.fromiter((x for x, _ in rated), np.int64, len(rated))
            r = np.fromiter((y for _, y in rated), np.float64, len(rated))
            resid = r - (mu + bi[j] + bu[inner])  # nb_bsl = mu + b_j + b_u
            cols = np.flatnonzero(known_i)
            s = sim[np.ix_(ki[cols], j)]  # (known movies, rated)
            if len(j) > k:
                idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
                s = np.take_along_axis(s, idx, 1)
                res = resid[idx]
            else:
                res = np.broadcast_to(resid, s.shape)
            pos = s > 0
            w = np.where(pos, s, 0.0)
            sum_sim = w.sum(1)
            num = (w * res).sum(1)
            ok = (pos.sum(1) >= min_k) & (sum_sim != 0)
            adj = np.where(ok, num / np.where(sum_sim == 0, 1, sum_sim), 0.0)
            out[row, cols] += adj
    return out


def check_surprise_scores(system: SurpriseSystem, n: int = 2000, seed: int = 0) -> float:
    """Max |vectorised score - algo.estimate| over ``n`` random (user, movie) pairs (unclipped)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, system.n_users, n)
    movies = rng.integers(0, system.n_movies, n)
    vec = system.score(np.arange(system.n_users))[users, movies]
    ref = np.array([system.algo.predict(int(u), int(i), clip=False).est for u, i in zip(users, movies, strict=True)])
    return float(np.max(np.abs(vec - ref)))


def surprise_systems() -> list[SurpriseSystem]:
    from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp

    return [
        SurpriseSystem("Surprise BaselineOnly", lambda s: BaselineOnly(verbose=False),
                       "defaults (ALS baselines, reg_i 10, reg_u 15, 10 epochs)", deterministic=True),
        SurpriseSystem("Surprise SVD", lambda s: SVD(random_state=s),
                       "defaults (100 factors, 20 epochs, lr 0.005, reg 0.02)"),
        SurpriseSystem("Surprise SVD++", lambda s: SVDpp(random_state=s, cache_ratings=True),
                       "defaults (20 factors, 20 epochs, lr 0.007, reg 0.02)"),
        SurpriseSystem("Surprise KNNBaseline",
                       lambda s: KNNBaseline(k=40, sim_options={"name": "pearson_baseline", "user_based": False},
                                             verbose=False),
                       "item-based, pearson_baseline, k 40, ALS baselines", deterministic=True),
    ]


# ------------------------------------------------------------------------------------ implicit


class ImplicitSystem(System):
    """implicit ALS / BPR on the binary matrix of training ratings (every rating is an interaction)."""

    rating = False

    def __init__(self, name: str, factory: Any, config: str) -> None:
        self.name, self.factory, self.config = name, factory, config

    def fit(self, train: Triples, seed: int) -> ImplicitSystem:
        import scipy.sparse as sp
        from threadpoolctl import threadpool_limits

        ui = sp.csr_matrix((np.ones(len(train), np.float32), (train.user, train.movie)),
                           shape=(train.n_users, train.n_movies))
        self.model = self.factory(seed)
        with threadpool_limits(1, "blas"):  # implicit's own advice: its threads, single-threaded BLAS
            self.model.fit(ui, show_progress=False)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        uf = np.asarray(self.model.user_factors)
        itf = np.asarray(self.model.item_factors)
        return uf[users] @ itf.T

    def fold_in(self, given: Triples, users: np.ndarray) -> np.ndarray | None:
        """ALS solves a new user's factors from their items (``recalculate_user``); BPR cannot."""
        if not hasattr(self.model, "recalculate_user") or "BPR" in self.name:
            return None
        import scipy.sparse as sp

        pos = np.searchsorted(users, given.user)
        keep = (pos < len(users)) & (users[np.minimum(pos, len(users) - 1)] == given.user)
        ui = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (pos[keep], given.movie[keep])),
                           shape=(len(users), given.n_movies))
        uf = np.asarray(self.model.recalculate_user(np.asarray(users), ui))
        return uf @ np.asarray(self.model.item_factors).T


def implicit_systems() -> list[ImplicitSystem]:
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    return [
        ImplicitSystem("implicit ALS", lambda s: AlternatingLeastSquares(random_state=s),
                       "defaults (100 factors, reg 0.01, alpha 1, 15 iterations)"),
        ImplicitSystem("implicit BPR", lambda s: BayesianPersonalizedRanking(random_state=s),
                       "defaults (100 factors, lr 0.01, reg 0.01, 100 iterations)"),
    ]


# ------------------------------------------------------------------------------ fastai recipe


class FastaiRecipe(System):
    """fastai's collaborative-filtering recipe re-implemented in plain torch (no fastai import).

    ``DotProductBias(n_factors=50, y_range=(0, 5.5))``: embeddings and bias embeddings initialised
    N(0, 0.01) (fastai's ``trunc_normal_`` at 0.01 std is the same to within 2 sigma), rating
    ``lo + (hi - lo) * sigmoid(u·m + b_u + b_m)``; MSE loss; batch 64 (fastai's default); 5 epochs
    of ``fit_one_cycle(5, 5e-3, wd=0.1)``: AdamW (decoupled wd 0.1, betas 0.9/0.99, eps 1e-5),
    learning rate one-cycle (25 % warm-up, div 25, final div 1e5, cosine) with beta1 cycling
    0.95 -> 0.85 -> 0.95, as fastai's defaults do. Ranking score: the logit (same order as the
    predicted rating).
    """

    name = "fastai recipe (plain torch)"
    config = "DotProductBias 50 factors, 5 epochs, bs 64, AdamW wd 0.1, one-cycle lr 5e-3"

    def __init__(self, factors: int = 50, epochs: int = 5, lr: float = 5e-3, wd: float = 0.1, bs: int = 64,
                 y_range: tuple[float, float] = (0.0, 5.5)) -> None:
        self.factors, self.epochs, self.lr, self.wd, self.bs, self.y_range = factors, epochs, lr, wd, bs, y_range

    def fit(self, train: Triples, seed: int) -> FastaiRecipe:
        import torch

        g = torch.Generator().manual_seed(seed)
        n, m, k = train.n_users, train.n_movies, self.factors
        self.uf = torch.nn.Parameter(torch.randn(n, k, generator=g) * 0.01)
        self.mf = torch.nn.Parameter(torch.randn(m, k, generator=g) * 0.01)
        self.ub = torch.nn.Parameter(torch.randn(n, generator=g) * 0.01)
        self.mb = torch.nn.Parameter(torch.randn(m, generator=g) * 0.01)
        params = [self.uf, self.mf, self.ub, self.mb]
        opt = torch.optim.AdamW(params, lr=self.lr, betas=(0.95, 0.99), eps=1e-5, weight_decay=self.wd,
                                foreach=True)  # same numbers as the default loop, ~2x faster here
        r = len(train)
        steps = math.ceil(r / self.bs) * self.epochs
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=steps, pct_start=0.25, anneal_strategy="cos", cycle_momentum=True,
            base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e5 / 25.0)
        u_all = torch.from_numpy(train.user.astype(np.int64))
        m_all = torch.from_numpy(train.movie.astype(np.int64))
        y_all = torch.from_numpy(train.rating.astype(np.float32))
        lo, hi = self.y_range
        for _ in range(self.epochs):
            perm = torch.randperm(r, generator=g)
            for s in range(0, r, self.bs):
                idx = perm[s:s + self.bs]
                u, mm, y = u_all[idx], m_all[idx], y_all[idx]
                z = (self.uf[u] * self.mf[mm]).sum(1) + self.ub[u] + self.mb[mm]
                loss = torch.nn.functional.mse_loss(lo + (hi - lo) * torch.sigmoid(z), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        return self

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            u = torch.from_numpy(np.asarray(users, np.int64))
            mm = torch.from_numpy(np.asarray(movies, np.int64))
            z = (self.uf[u] * self.mf[mm]).sum(1) + self.ub[u] + self.mb[mm]
            lo, hi = self.y_range
            return (lo + (hi - lo) * torch.sigmoid(z)).numpy()

    def score(self, users: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            u = torch.from_numpy(np.asarray(users, np.int64))
            return (self.uf[u] @ self.mf.T + self.ub[u, None] + self.mb[None, :]).numpy()


# ------------------------------------------------------------------------------------- ours


class Ours(System):
    """movierec's trainer with the defaults ``movierec train --model KIND`` uses (``trainer.fit.defaults_for``)."""

    def __init__(self, kind: str, **overrides: Any) -> None:
        self.kind, self.overrides = kind, overrides
        self.name = f"ours `{kind}`"
        self.config = f"defaults_for('{kind}'), as movierec train --model {kind}" + (
            f" + {overrides}" if overrides else "")

    @staticmethod
    def available() -> str | None:
        """None when the trainer API is importable, else why not."""
        try:
            from trainer.fit import defaults_for, fit  # noqa: F401
            from trainer.data import Ratings  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"{exc.__class__.__name__}: {exc}"
        return None

    def fit(self, train: Triples, seed: int) -> Ours:
        from trainer.data import Ratings
        import dataclasses

        from trainer.fit import defaults_for, fit

        self.ratings = Ratings(train.user, train.movie, train.rating, train.ts,
                               train.user_ids if train.user_ids is not None else np.arange(train.n_users),
                               train.movie_ids if train.movie_ids is not None else np.arange(train.n_movies))
        params = dataclasses.replace(defaults_for(self.kind), seed=seed, **self.overrides)
        self.params = params
        self.model, self.history = fit(self.ratings, params)
        return self

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(users), np.asarray(movies)), np.float64)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.rank_scores(np.asarray(users)))
