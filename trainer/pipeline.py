"""load -> evaluate -> refit -> gate -> publish.

1. Evaluation of the training procedure, with exactly the parameters of the final fit:
   * random 10 % of the ratings held out (protocol seed ``split.SPLIT_SEED``): RMSE and MAE of a
     model trained on the other 90 %, beside the bias baseline; its per-epoch curves go in the report;
   * each user's latest 20 % held out: NDCG/Recall/HR@10 of a model trained on the rest, beside
     popularity.
2. Refit: the published model is trained from scratch on **all** ratings with the same parameters
   and seed (manifest ``refit``), so that it knows every user and movie; its metrics are those of
   step 1 (the procedure's held-out estimates).
3. Quality gate (see ``trainer.gate``), then ``ModelStore.publish`` with the report PNGs. Nothing
   is published if any step fails.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import movierec
from movierec import ann_index
from movierec.store import ModelStore, StoreError
from trainer import GateRefusedError, NoDataError, TrainerError
from trainer.data import Ratings
from trainer.fit import Embeddings, FitParams, Progress, defaults_for, fit
from trainer.fit.init import load_embeddings
from trainer.fit.params import ONE_FIT, for_data
from trainer.gate import DEFAULT_TOLERANCE, GateDecision, check
from trainer.itemitem import term_for, term_manifest, with_item_term
from trainer.metrics import K, RELEVANT_AT, BiasBaseline, popularity_scores, ranking_metrics, rating_metrics
from trainer.models import RATING_SCALE, store_tensors
from trainer.report import report_writer
from trainer.split import LATEST_TEST_FRACTION, RANDOM_TEST_FRACTION, SPLIT_SEED, latest_split, random_split

#: Fewer ratings than this cannot be split into training and held-out parts meaningfully.
MIN_RATINGS = 10
REFIT = "all ratings: the published model is retrained from scratch on every rating with the same parameters " \
        "and seed; metrics are held-out estimates from the evaluation fits"

Log = Callable[[str], None]
#: The embeddings an ``nn`` fit on a training part starts from (``--init-from``).
InitFor = Callable[[Ratings], Embeddings]
#: ``fitter(train, params, valid=..., progress=...)``: how a run trains (:func:`trainer.fit.fit` with an
#: engine bound, or a distributed job's fit); every fit of a run goes through it.
Fitter = Callable[..., tuple[Any, Any]]


@dataclass
class TrainResult:
    """What a run produced: the manifest written (or that would have been) and the published version."""

    manifest: dict[str, Any]
    version: int | None
    gate: GateDecision
    seconds: float


def evaluation_protocol() -> dict[str, Any]:
    """The protocol constants; recorded in the manifest so that the gate only compares like with like."""
    return {
        "random": {"fraction": RANDOM_TEST_FRACTION, "seed": SPLIT_SEED},
        "latest": {"fraction": LATEST_TEST_FRACTION, "per_user": True},
        "k": K, "relevant_at": RELEVANT_AT,
    }


def training_sets(data: Ratings) -> list[tuple[Ratings, Ratings]]:
    """The (train, held-out) pairs of a run's fits, in the order they train: the random split, each user's
    latest ratings, and the refit on everything (nothing held out). A distributed job's ranks other than 0
    train exactly these, in this order, beside rank 0's :func:`train_and_publish`."""
    random_mask, latest_mask = random_split(data), latest_split(data)
    return [(data.subset(~random_mask), data.subset(random_mask)),
            (data.subset(~latest_mask), data.subset(latest_mask)),
            (data, data.subset(np.zeros(len(data), bool)))]


def evaluate(data: Ratings, params: FitParams, progress: Progress | None = None,
             log: Log = lambda _m: None, fitter: Fitter = fit, init_for: InitFor | None = None,
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    """Held-out metrics, baseline metrics and the random-split run's curves.

    ``init_for(train)``: the embeddings an ``nn`` fit on ``train`` starts from (``--init-from``); they
    must come from that same training part, so that no held-out rating leaks into the estimate.
    """
    metrics: dict[str, Any] = {}
    baselines: dict[str, Any] = {}
    (train, test), (latest_train, latest_test), _ = training_sets(data)
    log(f"evaluation 1/2: random {RANDOM_TEST_FRACTION:.0%} held out ({len(test)} ratings)")
    model, history = fitter(train, params, valid=test, progress=progress, **_init(init_for, train))
    if len(test):
        metrics.update(rating_metrics(model.predict(test.user, test.movie), test.rating))
        base = BiasBaseline().fit(train)
        baselines.update({f"{k}": v for k, v in rating_metrics(base.predict(test.user, test.movie), test.rating).items()})
        baselines["rating_baseline"] = "global mean + damped user and movie biases"
    train, test = latest_train, latest_test
    log(f"evaluation 2/2: each user's latest {LATEST_TEST_FRACTION:.0%} held out ({len(test)} ratings)")
    model, _ = fitter(train, params, progress=progress, **_init(init_for, train))
    if len(test):
        # Ranked as the API ranks: the model's score plus the item term of the training ratings.
        scorer = with_item_term(model.rank_scores, term_for(train, params), train.user, train.movie, train.n_users)
        ranking = ranking_metrics(train, test, scorer)
        metrics.update({k: v for k, v in ranking.items() if k != "users"})
        metrics["ranking_users"] = ranking["users"]
        pop = popularity_scores(train)
        popular = ranking_metrics(train, test, lambda users: np.broadcast_to(pop, (len(users), len(pop))))
        baselines.update({k: v for k, v in popular.items() if k != "users"})
        baselines["ranking_baseline"] = "popularity (number of training ratings)"
    return metrics, baselines, history.to_dict()


def train_and_publish(
    load: Callable[[], Ratings], store: ModelStore, params: FitParams, *, force: bool = False,
    tolerance: float = DEFAULT_TOLERANCE, keep: int | None = None, progress: Progress | None = None,
    log: Log = lambda _m: None, source: str = "database", fitter: Fitter = fit,
    candidate_share: float | None = None, ann_min_movies: int | None = None,
) -> TrainResult:
    """The whole run. Raises a TrainerError subclass for every expected failure; the store is then unchanged.

    With ``candidate_share``, the new version does not become current: it is published and made the
    candidate serving that share of users (docs/online-metrics.md), after the same quality gate.
    A catalogue of at least ``ann_min_movies`` movies is published with its ANN indexes
    (:mod:`movierec.ann_index`), so the API verifies them on load instead of building them.
    """
    start = time.perf_counter()
    data = load()
    if len(data) < MIN_RATINGS:
        raise NoDataError(f"only {len(data)} ratings: need at least {MIN_RATINGS} to train and evaluate")
    log(f"data: {len(data)} ratings, {data.n_users} users, {data.n_movies} movies (from {source})")
    sized = for_data(params, len(data), data.n_movies)
    if sized.ensemble != params.ensemble:
        log(f"one fit, not an ensemble of {params.ensemble}: {len(data)} ratings is over "
            f"{params.ensemble_max_ratings} (--ensemble N trains one anyway)")
    changed = {k: getattr(sized, k) for k in ONE_FIT if getattr(sized, k) != getattr(params, k)}
    if changed:
        log("one model's ranking defaults (" + ", ".join(f"{k} {v:g}" for k, v in changed.items())
            + "): the ensemble's lighter ranking term needs the ensemble and an item term")
    params = sized
    init, init_for = None, None
    if params.init_from is not None:
        init, init_for = _init_source(params, store, log)
        params = dataclasses.replace(params, factors=init.factors)  # the embeddings decide
    metrics, baselines, history = evaluate(data, params, progress, log, fitter, init_for)
    _log_metrics(log, metrics, baselines)
    log("refit on all ratings")
    model, refit_history = fitter(data, params, progress=progress, **({"init": init} if init is not None else {}))
    tensors = store_tensors(model, data.user_ids, data.movie_ids)
    term = term_for(data, params)
    if term is not None:
        tensors.update(term.tensors())
    manifest: dict[str, Any] = {
        "kind": params.model,
        "factors": model.factors,
        "y_range": list(params.y_range),
        "rating_scale": list(RATING_SCALE),
        "global_bias": model.global_bias,
        # dot: the scale a of the ranking logits a (u·m) + rb during training; the exported
        # rank_bias is already rb / a, so serving needs no scale (recorded for inspection).
        "rank_scale": float(getattr(model, "rank_scale", 1.0)),
        "counts": {"users": data.n_users, "movies": data.n_movies, "ratings": len(data)},
        "metrics": metrics,
        "baseline_metrics": baselines,
        "evaluation": evaluation_protocol(),
        "params": params.to_dict(),
        "data": data.snapshot(),
        "data_snapshot": data.snapshot(),
        "source": source,
        "code_version": movierec.__version__,
        "refit": REFIT,
        "history": {"evaluation": history, "refit": refit_history.to_dict()},
    }
    term_info = term_manifest(params, term, data.n_movies)
    if term_info is not None:
        manifest["item_term"] = term_info
    try:
        current_version = store.current_version()
        current = store.read_manifest(current_version) if current_version is not None else None
    except StoreError as exc:  # a damaged current model cannot vouch for anything; say so and carry on
        log(f"warning: cannot read the current model's manifest ({exc}); the gate has nothing to compare")
        current = None
    decision = check(manifest, current, tolerance)
    manifest["gate"] = {**decision.to_dict(), "tolerance": tolerance, "forced": force and not decision.passed}
    if not decision.passed and not force:
        raise GateRefusedError(f"not published: {decision.reason} (use --force to publish anyway)")
    log(("gate: " if decision.passed else "gate overridden by --force: ") + decision.reason)
    counts = np.bincount(data.movie, minlength=data.n_movies)
    writer = report_writer(history, tensors["movie_factors"], data.movie_ids, counts, data.titles)
    with_ann = ann_min_movies is not None and data.n_movies >= ann_min_movies

    def extra_files(directory: Path) -> None:
        writer(directory)
        if with_ann:
            indexes = ann_index.write_for_version(directory, tensors, params.model)
            log(f"ANN indexes built in {indexes.header['build_seconds']:.1f} s")

    manifest["seconds"] = round(time.perf_counter() - start, 2)
    try:
        version = store.publish(tensors, manifest, extra_files=extra_files, keep=keep,
                                make_current=candidate_share is None)
    except (OSError, StoreError) as exc:
        raise TrainerError(f"publishing to {store.root} failed, store unchanged: {exc}") from exc
    if candidate_share is not None:
        if store.current_version() == version:
            log("no other version to serve beside it: the new version is current")
        else:
            try:
                store.set_candidate(version, candidate_share)
            except (OSError, StoreError) as exc:
                raise TrainerError(f"version {version} published but not made the candidate: {exc}") from exc
            log(f"version {version} is the candidate for {100 * candidate_share:g} % of users")
    return TrainResult(manifest, version, decision, time.perf_counter() - start)


def _init(init_for: InitFor | None, train: Ratings) -> dict[str, Embeddings]:
    """The ``init`` keyword of a fit on ``train`` (none without ``--init-from``, so any fitter works)."""
    return {} if init_for is None else {"init": init_for(train)}


def _init_source(params: FitParams, store: ModelStore, log: Log) -> tuple[Embeddings, InitFor]:
    """``--init-from``: the source version's embeddings (for the refit) and, for the evaluation fits,
    a ``dot`` fit with the source's own parameters on each training part."""
    if params.model != "nn":
        raise TrainerError("--init-from starts an nn model from a dot model's embeddings; use it with --model nn")
    embeddings, manifest = load_embeddings(str(params.init_from), store.root)
    try:
        dot_params = FitParams.from_dict(manifest.get("params") or {})
    except TypeError:  # a manifest from another code version: its recorded parameters are not ours
        dot_params = defaults_for("dot")
    dot_params = dataclasses.replace(dot_params, model="dot", seed=params.seed)
    log(f"nn starts from the embeddings of version {manifest.get('version')} ({embeddings.factors} factors, "
        f"{'frozen' if params.freeze_embeddings else 'fine-tuned'}); evaluation fits refit that dot model per split")

    def init_for(train: Ratings) -> Embeddings:
        dot, _ = fit(train, dot_params)
        return Embeddings.of_model(dot, train.user_ids, train.movie_ids)

    return embeddings, init_for


def _log_metrics(log: Log, metrics: dict[str, Any], baselines: dict[str, Any]) -> None:
    for name in ("rmse", "mae", f"ndcg@{K}", f"recall@{K}", f"hr@{K}"):
        if name in metrics:
            log(f"  {name:10s} {metrics[name]:.4f}   baseline {baselines.get(name, float('nan')):.4f}")
