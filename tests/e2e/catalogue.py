"""A small, deterministic MovieLens-like world for the browser tests: movies, ratings, a fitted model.

No download: 60 well-known films (MovieLens-style genres), 400 synthetic users whose tastes follow
five genre clusters, and a ``dot`` model fitted to them by alternating least squares in numpy, then
published to a real model store with a manifest and two report PNGs like the trainer's. The
recommendations the tests see are computed by the real API from this model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import insert

from movierec.db.engine import make_engine
from movierec.db.schema import Movie, Rating
from movierec.store import ModelStore

#: (id, title, year, genres) — ids start at 1 like MovieLens.
MOVIES: list[tuple[int, str, int, str]] = [
    (1, "Toy Story", 1995, "Animation|Children's|Comedy"),
    (2, "GoldenEye", 1995, "Action|Adventure|Thriller"),
    (3, "Star Wars", 1977, "Action|Adventure|Romance|Sci-Fi|War"),
    (4, "The Empire Strikes Back", 1980, "Action|Adventure|Drama|Romance|Sci-Fi|War"),
    (5, "Return of the Jedi", 1983, "Action|Adventure|Romance|Sci-Fi|War"),
    (6, "Alien", 1979, "Action|Horror|Sci-Fi|Thriller"),
    (7, "Aliens", 1986, "Action|Sci-Fi|Thriller|War"),
    (8, "The Terminator", 1984, "Action|Sci-Fi|Thriller"),
    (9, "Terminator 2: Judgment Day", 1991, "Action|Sci-Fi|Thriller"),
    (10, "Blade Runner", 1982, "Film-Noir|Sci-Fi"),
    (11, "Star Trek: First Contact", 1996, "Action|Adventure|Sci-Fi"),
    (12, "Independence Day (ID4)", 1996, "Action|Sci-Fi|War"),
    (13, "Contact", 1997, "Drama|Sci-Fi"),
    (14, "Twelve Monkeys", 1995, "Drama|Sci-Fi"),
    (15, "The Fifth Element", 1997, "Action|Sci-Fi"),
    (16, "Jurassic Park", 1993, "Action|Adventure|Sci-Fi"),
    (17, "Raiders of the Lost Ark", 1981, "Action|Adventure"),
    (18, "Indiana Jones and the Last Crusade", 1989, "Action|Adventure"),
    (19, "Die Hard", 1988, "Action|Thriller"),
    (20, "The Rock", 1996, "Action|Adventure|Thriller"),
    (21, "Speed", 1994, "Action|Romance|Thriller"),
    (22, "Mission: Impossible", 1996, "Action|Adventure|Mystery"),
    (23, "Forrest Gump", 1994, "Comedy|Romance|War"),
    (24, "When Harry Met Sally...", 1989, "Comedy|Romance"),
    (25, "Sleepless in Seattle", 1993, "Comedy|Romance"),
    (26, "Groundhog Day", 1993, "Comedy|Romance"),
    (27, "The Princess Bride", 1987, "Action|Adventure|Comedy|Romance"),
    (28, "Four Weddings and a Funeral", 1994, "Comedy|Romance"),
    (29, "Sense and Sensibility", 1995, "Drama|Romance"),
    (30, "Pretty Woman", 1990, "Comedy|Romance"),
    (31, "Annie Hall", 1977, "Comedy|Romance"),
    (32, "The Birdcage", 1996, "Comedy"),
    (33, "Monty Python and the Holy Grail", 1974, "Comedy"),
    (34, "Clueless", 1995, "Comedy|Romance"),
    (35, "The Godfather", 1972, "Action|Crime|Drama"),
    (36, "The Godfather: Part II", 1974, "Action|Crime|Drama"),
    (37, "Pulp Fiction", 1994, "Crime|Drama"),
    (38, "The Shawshank Redemption", 1994, "Drama"),
    (39, "The Silence of the Lambs", 1991, "Drama|Thriller"),
    (40, "Fargo", 1996, "Crime|Drama|Thriller"),
    (41, "The Usual Suspects", 1995, "Crime|Thriller"),
    (42, "Schindler's List", 1993, "Drama|War"),
    (43, "Casablanca", 1942, "Drama|Romance|War"),
    (44, "L.A. Confidential", 1997, "Crime|Film-Noir|Mystery|Thriller"),
    (45, "Se7en", 1995, "Crime|Thriller"),
    (46, "Reservoir Dogs", 1992, "Crime|Thriller"),
    (47, "The Lion King", 1994, "Animation|Children's|Musical"),
    (48, "Aladdin", 1992, "Animation|Children's|Comedy|Musical"),
    (49, "Beauty and the Beast", 1991, "Animation|Children's|Musical"),
    (50, "Snow White and the Seven Dwarfs", 1937, "Animation|Children's|Musical"),
    (51, "The Wizard of Oz", 1939, "Adventure|Children's|Drama|Musical"),
    (52, "Babe", 1995, "Children's|Comedy|Drama"),
    (53, "Wallace & Gromit: The Best of Aardman Animation", 1996, "Animation"),
    (54, "The Jungle Book", 1967, "Animation|Children's|Comedy|Musical"),
    (55, "Scream", 1996, "Horror|Thriller"),
    (56, "The Shining", 1980, "Horror"),
    (57, "Psycho", 1960, "Horror|Romance|Thriller"),
    (58, "Night of the Living Dead", 1968, "Horror"),
    (59, "Carrie", 1976, "Horror"),
    (60, "The Exorcist", 1973, "Horror"),
]

#: Taste clusters: a synthetic user likes one or two of these a lot.
CLUSTERS: dict[str, set[str]] = {
    "scifi": {"Sci-Fi", "Action", "Adventure", "War"},
    "romcom": {"Comedy", "Romance"},
    "crime": {"Crime", "Drama", "Thriller", "Film-Noir", "Mystery"},
    "family": {"Animation", "Children's", "Musical"},
    "horror": {"Horror"},
}

N_USERS = 400
FACTORS = 8
Y_RANGE = (0.0, 5.5)
RATING_SCALE = (0.5, 5.0)
BASE_TIME = 880_000_000


def sci_fi_ids() -> list[int]:
    """Movies whose genres include Sci-Fi."""
    return [mid for mid, _t, _y, g in MOVIES if "Sci-Fi" in g.split("|")]


def synthetic_ratings(seed: int = 7) -> np.ndarray:
    """(user, movie, rating, time) rows, ratings in half stars; each user rates 12-30 movies."""
    rng = np.random.default_rng(seed)
    names = list(CLUSTERS)
    affinity = np.zeros((len(MOVIES), len(names)))
    for i, (_mid, _title, _year, genres) in enumerate(MOVIES):
        gs = set(genres.split("|"))
        for j, name in enumerate(names):
            affinity[i, j] = len(gs & CLUSTERS[name]) / len(gs)
    quality = rng.normal(0.0, 0.35, len(MOVIES))
    # Popularity skew: lower ids (and the classics) are seen more, as in MovieLens.
    seen_weight = np.linspace(2.0, 0.6, len(MOVIES))
    rows = []
    for user in range(1, N_USERS + 1):
        taste = np.zeros(len(names))
        liked = rng.choice(len(names), size=rng.integers(1, 3), replace=False)
        taste[liked] = rng.uniform(1.5, 2.5, len(liked))
        taste -= 0.6
        score = 3.0 + affinity @ taste + quality + rng.normal(0.0, 0.45, len(MOVIES))
        p = seen_weight * (0.3 + affinity @ (taste > 0))
        p = p / p.sum()
        n = int(rng.integers(12, 31))
        movies = rng.choice(len(MOVIES), size=n, replace=False, p=p)
        for idx in movies:
            rating = float(np.clip(np.round(score[idx] * 2) / 2, *RATING_SCALE))
            rows.append((user, MOVIES[idx][0], rating, BASE_TIME + user * 1000 + int(idx)))
    return np.array(rows, dtype=np.float64)


def import_into(url: str, ratings: np.ndarray) -> None:
    """Insert the catalogue and ``ratings`` into the (migrated, empty) database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Movie), [
                {"id": mid, "title": title, "year": year, "genres": genres} for mid, title, year, genres in MOVIES
            ])
            conn.execute(insert(Rating), [
                {"user_id": int(u), "movie_id": int(m), "rating": float(r), "rated_at": int(t)}
                for u, m, r, t in ratings
            ])
    finally:
        engine.dispose()


def _logit_targets(r: np.ndarray) -> np.ndarray:
    lo, hi = Y_RANGE
    p = np.clip((r - lo) / (hi - lo), 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p))


def _predict(lo_hi: tuple[float, float], logit: np.ndarray) -> np.ndarray:
    lo, hi = lo_hi
    return np.clip(lo + (hi - lo) / (1 + np.exp(-logit)), *RATING_SCALE)


def fit_dot(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, n_users: int, n_movies: int,
            iters: int = 12, reg: float = 1.0, seed: int = 0,
            valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], float, list]:
    """ALS with biases in logit space. Returns (factors and biases, global bias, per-iteration RMSEs)."""
    rng = np.random.default_rng(seed)
    y = _logit_targets(ratings)
    g = float(y.mean())
    uf = rng.normal(0, 0.1, (n_users, FACTORS))
    mf = rng.normal(0, 0.1, (n_movies, FACTORS))
    ub = np.zeros(n_users)
    mb = np.zeros(n_movies)
    eye = np.eye(FACTORS + 1)
    history = []
    for _ in range(iters):
        for side in ("user", "movie"):
            rows, cols = (users, movies) if side == "user" else (movies, users)
            own_f, own_b = (uf, ub) if side == "user" else (mf, mb)
            other_f, other_b = (mf, mb) if side == "user" else (uf, ub)
            for i in range(len(own_f)):
                sel = rows == i
                if not sel.any():
                    continue
                x = np.hstack([other_f[cols[sel]], np.ones((sel.sum(), 1))])
                t = y[sel] - g - other_b[cols[sel]]
                sol = np.linalg.solve(x.T @ x + reg * eye, x.T @ t)
                own_f[i], own_b[i] = sol[:-1], sol[-1]
        train_rmse = float(np.sqrt(np.mean((_predict(Y_RANGE, (uf[users] * mf[movies]).sum(1) + ub[users] + mb[movies] + g) - ratings) ** 2)))
        valid_rmse = None
        if valid is not None:
            vu, vm, vr = valid
            pred = _predict(Y_RANGE, (uf[vu] * mf[vm]).sum(1) + ub[vu] + mb[vm] + g)
            valid_rmse = float(np.sqrt(np.mean((pred - vr) ** 2)))
        history.append((train_rmse, valid_rmse))
    tensors = {"user_factors": uf.astype(np.float32), "movie_factors": mf.astype(np.float32),
               "user_bias": ub.astype(np.float32), "movie_bias": mb.astype(np.float32)}
    return tensors, g, history


def _bias_baseline(tu, tm, tr, vu, vm, n_users, n_movies, reg=5.0):
    mu = tr.mean()
    bm = np.bincount(tm, tr - mu, n_movies) / (np.bincount(tm, minlength=n_movies) + reg)
    bu = np.bincount(tu, tr - mu - bm[tm], n_users) / (np.bincount(tu, minlength=n_users) + reg)
    return np.clip(mu + bu[vu] + bm[vm], *RATING_SCALE)


def publish_model(store_root: Path, ratings: np.ndarray) -> int:
    """Evaluate on a random 10 %, refit on everything, publish with metrics, baselines and PNGs."""
    user_ids = np.unique(ratings[:, 0]).astype(np.int64)
    movie_ids = np.array(sorted(mid for mid, *_ in MOVIES), dtype=np.int64)
    u = np.searchsorted(user_ids, ratings[:, 0].astype(np.int64))
    m = np.searchsorted(movie_ids, ratings[:, 1].astype(np.int64))
    r = ratings[:, 2]
    test = np.random.default_rng(1).random(len(r)) < 0.1
    eval_tensors, g_eval, history = fit_dot(u[~test], m[~test], r[~test], len(user_ids), len(movie_ids),
                                            valid=(u[test], m[test], r[test]))
    et = eval_tensors
    pred = _predict(Y_RANGE, (et["user_factors"][u[test]] * et["movie_factors"][m[test]]).sum(1)
                    + et["user_bias"][u[test]] + et["movie_bias"][m[test]] + g_eval)
    base = _bias_baseline(u[~test], m[~test], r[~test], u[test], m[test], len(user_ids), len(movie_ids))
    metrics = {"rmse": float(np.sqrt(np.mean((pred - r[test]) ** 2))), "mae": float(np.mean(np.abs(pred - r[test])))}
    baselines = {"rmse": float(np.sqrt(np.mean((base - r[test]) ** 2))), "mae": float(np.mean(np.abs(base - r[test]))),
                 "rating_baseline": "global mean + damped user and movie biases"}
    tensors, g, _ = fit_dot(u, m, r, len(user_ids), len(movie_ids))
    tensors = {"user_ids": user_ids, "movie_ids": movie_ids, **tensors}
    counts = np.bincount(m, minlength=len(movie_ids))
    titles = {mid: title for mid, title, *_ in MOVIES}
    manifest = {
        "kind": "dot",
        "factors": FACTORS,
        "y_range": list(Y_RANGE),
        "rating_scale": list(RATING_SCALE),
        "global_bias": g,
        "counts": {"users": len(user_ids), "movies": len(movie_ids), "ratings": len(r)},
        "metrics": metrics,
        "baseline_metrics": baselines,
        "source": "tests/e2e synthetic catalogue",
    }

    def report(directory: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        epochs = np.arange(1, len(history) + 1)
        ax.plot(epochs, [h[0] for h in history], label="train RMSE")
        ax.plot(epochs, [h[1] for h in history], label="validation RMSE")
        ax.set_xlabel("ALS iteration")
        ax.set_title("training curves (e2e fixture)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "curves.png")
        plt.close(fig)

        x = tensors["movie_factors"].astype(np.float64)
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        proj = x @ vt[:2].T
        fig, ax = plt.subplots(figsize=(9, 7), dpi=100)
        ax.scatter(proj[:, 0], proj[:, 1], s=10, c="tab:blue")
        for i, mid in enumerate(movie_ids):
            ax.annotate(titles[int(mid)][:28], (proj[i, 0], proj[i, 1]), fontsize=7)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title(f"movie factors, first two principal components ({int(counts.sum())} ratings)")
        fig.tight_layout()
        fig.savefig(directory / "movie_pca.png")
        plt.close(fig)

    return ModelStore(store_root).publish(tensors, manifest, extra_files=report)
