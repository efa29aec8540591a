"""Report PNGs written into the published version directory (via ``publish(extra_files=...)``).

* ``curves.png``: training loss (MSE and ranking parts) and validation RMSE per epoch of the
  evaluation run (the run that had a held-out set);
* ``movie_pca.png``: the movie factors projected on their first two principal components, the
  most-rated movies labelled with their titles, as in the fastai book's chapter on collaborative
  filtering.

matplotlib with the Agg backend (no display needed); both figures take well under a second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

CURVES_FILE = "curves.png"
PCA_FILE = "movie_pca.png"


def pca_2d(factors: np.ndarray) -> np.ndarray:
    """First two principal components of the rows of ``factors`` (centred; SVD, deterministic signs)."""
    x = np.asarray(factors, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2 or x.shape[1] < 1:
        return np.zeros((x.shape[0], 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    # Fix the arbitrary sign of each component so the same model always draws the same picture.
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    proj = x @ comps.T
    if proj.shape[1] < 2:
        proj = np.hstack([proj, np.zeros((proj.shape[0], 2 - proj.shape[1]))])
    return proj


def write_curves(path: Path, history: Mapping[str, Sequence[float]], title: str = "") -> None:
    """Loss and validation-RMSE curves per epoch."""
    import matplotlib

    from trainer.fit.params import History

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if len(epochs):
        ax.plot(epochs, np.sqrt(np.asarray(history["loss"])), label="train RMSE (sqrt MSE loss)")
        if history.get("valid_rmse"):
            ax.plot(epochs[: len(history["valid_rmse"])], history["valid_rmse"], label="validation RMSE")
        rank = History.from_dict(history).rank  # also from a manifest that still calls it "bpr"
        if rank and any(rank):
            ax.plot(epochs, rank, label="train ranking loss", linestyle="--")
    ax.set_xlabel("epoch")
    ax.set_title(title or "training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_pca(path: Path, movie_factors: np.ndarray, movie_ids: np.ndarray, counts: np.ndarray,
              titles: Mapping[int, str], n_labels: int = 50) -> None:
    """2-D PCA of the movie factors, the ``n_labels`` most-rated movies labelled by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    proj = pca_2d(movie_factors)
    top = np.argsort(-np.asarray(counts), kind="stable")[:n_labels]
    fig, ax = plt.subplots(figsize=(11, 9), dpi=100)
    ax.scatter(proj[:, 0], proj[:, 1], s=4, c="lightgray")
    ax.scatter(proj[top, 0], proj[top, 1], s=10, c="tab:blue")
    for i in top:
        label = titles.get(int(movie_ids[i]), str(int(movie_ids[i])))
        ax.annotate(label[:40], (proj[i, 0], proj[i, 1]), fontsize=7)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"movie factors, first two principal components ({n_labels} most-rated labelled)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report_writer(history: Mapping[str, Sequence[float]], movie_factors: np.ndarray, movie_ids: np.ndarray,
                  counts: np.ndarray, titles: Mapping[int, str]) -> Callable[[Path], None]:
    """The ``extra_files`` callback for ``ModelStore.publish``."""

    def write(directory: Path) -> None:
        write_curves(directory / CURVES_FILE, history, "evaluation run (random 10 % held out)")
        write_pca(directory / PCA_FILE, movie_factors, movie_ids, counts, titles)

    return write
