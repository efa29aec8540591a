"""``movierec train``: registered by the composition root (``cli/main.py``) as ``app.command("train")(train)``.

Importing this module is cheap (typer only): torch, numpy-heavy modules and SQLAlchemy are
imported inside :func:`train`, so the rest of the CLI starts fast.

Exit codes: 0 published; 1 failure (bad data, store or database error); 2 no data;
3 refused by the quality gate; 4 training diverged (NaN loss); 5 the device asked for is not
available (``--device cuda`` without a GPU); 6 the processes of a distributed job disagree on the
ratings or parameters (stopped before training); 7 a process of a distributed job failed (nothing
published). Expected failures print one line ``error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from movierec.progress import Progress, Task


class Device(str, Enum):
    """Where the ``dot`` step runs (``trainer.fit.engine``)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class EngineKind(str, Enum):
    """What computes the ``dot`` step: numba kernels (CPU) or torch ops (any device)."""

    auto = "auto"
    numba = "numba"
    torch = "torch"


class ModelKind(str, Enum):
    """The two model kinds of the store format."""

    dot = "dot"
    nn = "nn"


def train(
    model: Annotated[ModelKind, typer.Option("--model", help="dot: biased MF + sampled-softmax ranking; nn: embeddings + MLP.")] =
    ModelKind.dot,
    factors: Annotated[Optional[int], typer.Option(min=1, help="Latent factors (default per model).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs of each fit (default per model).")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Peak learning rate of the one-cycle schedule.")] = None,
    wd: Annotated[Optional[float], typer.Option(min=0.0, help="L2 / weight decay.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Ratings per minibatch.")] = None,
    rank_weight: Annotated[Optional[float], typer.Option(min=0.0, help="Weight of the ranking loss (0: off).")] =
    None,
    rank_sample: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help=(
        "Fraction of each batch in the ranking loss once an epoch has more than 1M ratings "
        "(default 0.25; 1: every rating, slower)."))] = None,
    ensemble: Annotated[Optional[int], typer.Option(min=1, help=(
        "dot: members (seeds seed, seed+1, ...) published as one model whose logits are their mean, cut back "
        "to --factors factors (default per model; 1: one model)."))] = None,
    seed: Annotated[int, typer.Option(help="Training seed: same seed + same data -> identical model.")] = 42,
    force: Annotated[bool, typer.Option("--force", help="Publish even if the quality gate refuses.")] = False,
    tolerance: Annotated[Optional[float], typer.Option(min=0.0, help="Gate tolerance, relative (0.03 = 3 %).")] =
    None,
    source: Annotated[Optional[Path], typer.Option(
        help="Train from a MovieLens directory or u.data file instead of the database.")] = None,
    store: Annotated[Optional[Path], typer.Option(help="Model store (default MOVIEREC_MODEL_STORE).")] = None,
    init_from: Annotated[Optional[str], typer.Option(
        "--init-from", help="nn only: start from the embeddings of this dot model (store version number or "
        "version directory).")] = None,
    freeze_embeddings: Annotated[bool, typer.Option(
        "--freeze-embeddings", help="With --init-from: keep the embeddings fixed (only the MLP learns).")] = False,
    device: Annotated[Device, typer.Option(help=(
        "auto: a GPU when torch sees one (torch engine), else the CPU (numba); cuda without a GPU is an "
        "error (exit 5)."))] = Device.auto,
    engine: Annotated[EngineKind, typer.Option(help=(
        "auto: numba on the CPU, torch on a GPU; torch on the CPU runs the GPU's code (slower than numba)."))] =
    EngineKind.auto,
    nproc: Annotated[int, typer.Option(min=1, help=(
        "Processes of a distributed job on this machine (one per GPU, or per CPU socket): rows sharded over "
        "them, torch.distributed; across machines use torchrun (docs/trainer.md)."))] = 1,
    bpr_weight: Annotated[Optional[float], typer.Option(
        min=0.0, hidden=True, help="Deprecated: the old name of --rank-weight.")] = None,
    candidate: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="Publish as the candidate version serving this share of users (0..1) "
                               "instead of making it current.")] = None,
) -> None:
    """Train a model on all ratings, evaluate it against baselines, and publish it if it passes the gate."""
    import os

    # Threads that wait for work spin, so a chain of short parallel loops does not pay a wake-up
    # each time (with OMP_WAIT_POLICY=PASSIVE, 2 threads trained 40 % slower at 5M ratings);
    # a bounded spin (~0.1 ms) keeps that while not burning a core for long when the machine
    # is busy. How many threads train is chosen by load (trainer.fit.threads.default_threads). Must be
    # set before torch and numba load their OpenMP runtimes; an explicit setting wins.
    os.environ.setdefault("GOMP_SPINCOUNT", "100000")
    from trainer import TrainerError

    missing = missing_training_packages()
    if missing:
        typer.echo(f"error: movierec train needs the `train` extra, which is not installed (missing: "
                   f"{', '.join(missing)}): pip install 'movierec[train]'", err=True)
        raise typer.Exit(1)

    if bpr_weight is not None:  # the option's name before the ranking loss became a sampled softmax
        if rank_weight is not None and rank_weight != bpr_weight:
            raise typer.BadParameter("give --rank-weight only (--bpr-weight is its deprecated old name)",
                                     param_hint="--bpr-weight")
        typer.echo("warning: --bpr-weight is deprecated, use --rank-weight", err=True)
        rank_weight = bpr_weight
    if freeze_embeddings and init_from is None:
        raise typer.BadParameter("--freeze-embeddings needs --init-from", param_hint="--freeze-embeddings")
    if init_from is not None and model is not ModelKind.nn:
        raise typer.BadParameter("--init-from starts an nn model from a dot model's embeddings: use --model nn",
                                 param_hint="--init-from")
    if ensemble is not None and ensemble > 1 and model is not ModelKind.dot:
        raise typer.BadParameter("--ensemble combines dot models: use --model dot", param_hint="--ensemble")
    if init_from is not None and nproc > 1:
        raise typer.BadParameter("--init-from trains one process (drop --nproc)", param_hint="--init-from")
    from trainer.distributed import in_worker, launched_bare

    if launched_bare():
        typer.echo("error: movierec train was started as one process of a torchrun job: every process would "
                   "publish on its own; run `torchrun ... -m trainer.distributed [train options]` instead", err=True)
        raise typer.Exit(1)
    if nproc > 1 and not in_worker():
        from trainer.distributed import RankFailedError, launch
        from trainer.fit import DeviceUnavailableError, resolve

        try:  # fail here, once, rather than in every process
            if engine == EngineKind.numba:
                raise DeviceUnavailableError("a distributed job (--nproc) trains with the torch engine, not numba")
            resolve(device.value, "torch", model.value, cuda_index=nproc - 1)  # one GPU per process
        except TrainerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        forwarded = _forward(model=model.value, factors=factors, epochs=epochs, lr=lr, wd=wd, batch_size=batch_size,
                             rank_weight=rank_weight, rank_sample=rank_sample, ensemble=ensemble, seed=seed, force=force,
                             tolerance=tolerance, source=source, store=store, device=device.value,
                             engine=engine.value, candidate=candidate)
        from movierec.settings import get_settings
        from movierec.store import ModelStore

        models = ModelStore(store or get_settings().model_store)
        before = models.versions() if models.root.exists() else []
        code = launch(nproc, forwarded)  # prints its own line when a process failed
        if code == RankFailedError.exit_code:
            after = models.versions() if models.root.exists() else []
            typer.echo("error: " + ("nothing was published" if after == before else
                                    f"rank 0 had finished and published version {max(after)}"), err=True)
        if code:
            raise typer.Exit(code)
        return
    try:
        _run(model.value, factors, epochs, lr, wd, batch_size, rank_weight, seed, force, tolerance, source, store,
             rank_sample, device.value, engine.value, candidate, init_from, freeze_embeddings, ensemble)
    except TrainerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


#: What only training imports: the `train` extra of pyproject.toml (the API image leaves it out).
TRAINING_PACKAGES = ("torch", "numba", "matplotlib")


def missing_training_packages() -> list[str]:
    """The packages of the ``train`` extra that cannot be imported here (found without importing them)."""
    from importlib.util import find_spec

    return [name for name in TRAINING_PACKAGES if find_spec(name) is None]


def _forward(**options: object) -> list[str]:
    """``options`` as the command line of ``python -m trainer.distributed`` (None: left to its default)."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        args += [flag] if value is True else [flag, str(value)]
    return args


def _run(kind: str, factors: int | None, epochs: int | None, lr: float | None, wd: float | None,
         batch_size: int | None, rank_weight: float | None, seed: int, force: bool, tolerance: float | None,
         source: Path | None, store_path: Path | None, rank_sample: float | None = None, device: str = "auto",
         engine: str = "auto", candidate: float | None = None, init_from: str | None = None,
         freeze_embeddings: bool = False, ensemble: int | None = None) -> None:
    from movierec.settings import get_settings
    from movierec.store import ModelStore
    from functools import partial

    from trainer.data import load_db, load_files
    from trainer.distributed import in_worker, run_rank
    from trainer.fit import defaults_for, fit, resolve
    from trainer.gate import DEFAULT_TOLERANCE
    from trainer.pipeline import train_and_publish

    settings = get_settings()
    params = defaults_for(kind)
    given = []
    for name, value in (("factors", factors), ("epochs", epochs), ("lr", lr), ("wd", wd),
                        ("batch_size", batch_size), ("rank_weight", rank_weight),
                        ("rank_sample", rank_sample), ("ensemble", ensemble)):
        if value is not None:
            setattr(params, name, value)
            given.append(name)
    if params.fixed is not None:  # size-dependent defaults: what was asked for stays as asked
        params.fixed = tuple(given)
    if ensemble is not None:  # asked for: whatever the data size
        params.ensemble_max_ratings = None
    params.seed = seed
    params.init_from, params.freeze_embeddings = init_from, freeze_embeddings
    store = ModelStore(store_path or settings.model_store)
    if source is not None:
        def load():  # type: ignore[no-untyped-def]
            return load_files(source)
        where = str(source)
    else:
        def load():  # type: ignore[no-untyped-def]
            return load_db(settings.database_url)
        where = "database"
    with Progress() as progress:
        report = _Reporter(progress)

        def run(fitter):  # type: ignore[no-untyped-def]
            return train_and_publish(load, store, params, force=force,
                                     tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
                                     keep=settings.keep_versions, progress=report.epoch, log=report.log,
                                     source=where, fitter=fitter,
                                     candidate_share=candidate, ann_min_movies=settings.ann_min_movies)

        if in_worker():
            result = run_rank(load, params, device, run, report.log)
            if result is None:  # a rank other than 0: rank 0 publishes and reports
                return
        else:
            chosen = resolve(device, engine, kind)
            report.log(f"engine: {chosen.kind} on {chosen.device}")
            result = run(partial(fit, engine=chosen))
    m = result.manifest["metrics"]
    typer.echo(f"published version {result.version} to {store.root} "
               f"(rmse {m.get('rmse', float('nan')):.4f}, ndcg@10 {m.get('ndcg@10', float('nan')):.4f}, "
               f"{result.seconds:.1f}s)")


class _Reporter:
    """Training progress through :class:`movierec.progress.Progress`: a bar per fit on a terminal,
    plain lines on stderr otherwise."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Task | None = None

    def log(self, message: str) -> None:
        self.progress.line(message)
        self.task = None  # next epoch starts a new bar for the next fit

    def epoch(self, epoch: int, epochs: int, loss: float, valid: float | None) -> None:
        if self.task is None or epoch == 1:
            self.task = self.progress.track("epoch", total=epochs)
        self.task.step(epoch, f"loss {loss:.4f}" + (f"  valid rmse {valid:.4f}" if valid is not None else ""))
