"""Starting an ``nn`` model from a trained ``dot`` model's embeddings (``--init-from``, ``--freeze-embeddings``).

"Training back to update the embeddings or not, depending on how much data you have": the MLP
learns on top of embeddings that matrix factorisation already found, either kept fixed (frozen:
only the MLP and the ranking bias learn) or fine-tuned with everything else.

The embeddings travel by id (:class:`Embeddings`), so a source trained on other data still fits:
users and movies it knows get its rows, the others the usual random init.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer import TrainerError


@dataclass(frozen=True)
class Embeddings:
    """Factors of a trained ``dot`` model, by MovieLens id."""

    user_ids: np.ndarray  # (n,) int64 increasing
    movie_ids: np.ndarray  # (m,) int64 increasing
    user_factors: np.ndarray  # (n, k) float32
    movie_factors: np.ndarray  # (m, k) float32

    @property
    def factors(self) -> int:
        return int(self.user_factors.shape[1])

    @classmethod
    def of_model(cls, model: torch.nn.Module, user_ids: np.ndarray, movie_ids: np.ndarray) -> Embeddings:
        """The embeddings of a freshly trained torch model (``user_factors``/``movie_factors`` parameters)."""
        return cls(np.asarray(user_ids, np.int64), np.asarray(movie_ids, np.int64),
                   model.user_factors.detach().numpy().astype(np.float32),
                   model.movie_factors.detach().numpy().astype(np.float32))


def copy_into(target: torch.nn.Parameter, target_ids: np.ndarray, source: np.ndarray, source_ids: np.ndarray) -> int:
    """Overwrite the rows of ``target`` whose ids ``source_ids`` holds with the source rows; return how many."""
    pos = np.searchsorted(source_ids, target_ids)
    pos = np.minimum(pos, max(len(source_ids) - 1, 0))
    found = (source_ids[pos] == target_ids) if len(source_ids) else np.zeros(len(target_ids), bool)
    with torch.no_grad():
        rows = torch.from_numpy(np.flatnonzero(found))
        target[rows] = torch.from_numpy(source[pos[found]])
    return int(found.sum())


def load_embeddings(source: str, store_root: Path) -> tuple[Embeddings, dict]:
    """The embeddings and manifest of a ``dot`` model: a version number of the store at ``store_root``,
    or the path of a version directory. Raises TrainerError (a clear CLI error) for anything else."""
    from movierec.store import ModelStore, StoreError

    path = Path(source)
    try:
        if source.isdigit():
            artifact = ModelStore(store_root).load(int(source))
        elif path.is_dir() and path.name.isdigit():
            artifact = ModelStore(path.parent).load(int(path.name))
        else:
            raise TrainerError(f"--init-from {source!r}: give a model version number or a version directory")
    except StoreError as exc:
        raise TrainerError(f"--init-from {source}: {exc}") from exc
    if artifact.kind != "dot":
        raise TrainerError(f"--init-from {source}: version {artifact.version} is a {artifact.kind} model, "
                           "need a dot model's embeddings")
    t = artifact.tensors
    emb = Embeddings(np.asarray(t["user_ids"], np.int64), np.asarray(t["movie_ids"], np.int64),
                     np.array(t["user_factors"], np.float32), np.array(t["movie_factors"], np.float32))
    return emb, artifact.manifest
