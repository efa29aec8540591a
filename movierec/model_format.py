"""The format of one model version: its tensors, its manifest, and what they mean. The one definition.

A version is a ``model.safetensors`` file and a ``manifest.json`` (laid out on disk by
:mod:`movierec.store`). The trainer writes it, the API scores with it; both follow this module.

Tensors in ``model.safetensors`` (n users, m movies, k factors):

=================  ==============  ==========================================================
name               shape / dtype   meaning
=================  ==============  ==========================================================
``user_ids``       (n,) int64      MovieLens user id of each row, strictly increasing
``movie_ids``      (m,) int64      MovieLens movie id of each row, strictly increasing
``user_factors``   (n, k) float32  user embeddings
``movie_factors``  (m, k) float32  movie embeddings
``user_bias``      (n,) float32    user biases
``movie_bias``     (m,) float32    movie biases
``rank_bias``      (m,) float32    optional: movie term of the ranking score (see below)
``mlp.N.weight``   (out, in)       ``nn`` models only: linear layer N (torch layout)
``mlp.N.bias``     (out,)          ``nn`` models only
``item_indptr``    (m + 1,) int64  optional: item-item term of the ranking score, CSR row pointers
``item_indices``   (nnz,) int32    optional: its column (movie row) indices
``item_weights``   (nnz,) float32  optional: its weights (the blend weight multiplied in)
``movie_norm``     (m,) float32    derived: L2 norm of each ``movie_factors`` row (cosine similarity)
``movie_h1``       (m, h) float32  derived, ``nn`` only: ``movie_factors @ mlp.0.weight[:, k:].T``,
                                   the movie half of the first layer (h = its outputs)
=================  ==============  ==========================================================

Derived tensors are functions of the others, written by :meth:`movierec.store.ModelStore.publish`
(:func:`derive`) so that a server maps them from the file like the rest (every worker of a host
shares the same pages) instead of computing a private copy; versions published without them get
them computed when loaded (:func:`normalize`).

Semantics (``manifest["y_range"] = [lo, hi]``, ``manifest["global_bias"] = g``, sigmoid ``s``):

* ``dot``: ``logit = u·m + b_u + b_m + g``; rating ``= lo + (hi - lo) * s(logit)``, clipped to the
  rating scale. The ranking score of movie m for user u is ``u·m + rank_bias[m]`` when
  ``rank_bias`` is present, else ``u·m + b_m`` (``b_u`` and ``g`` are the same for every movie).
* ``nn``: ``x = concat(user_factors[u], movie_factors[m])``; every ``mlp.N`` layer but the last
  is followed by ReLU; the last has one output, the logit; ``rating = lo + (hi - lo) * s(logit + g)``.
  The ranking score is ``logit + rank_bias[m]`` when ``rank_bias`` is present, else the logit.
* Item-item term (either kind, when the three ``item_*`` tensors are present; :mod:`movierec.item_term`):
  a sparse movie x movie matrix ``W``; the ranking score of movie ``i`` for a user whose rated movies
  are ``R`` gains ``sum_{j in R} W[j, i]`` (every rated movie counts, whatever its stars; trained and
  folded-in users alike). Ratings (``/predict``) never use it. ``manifest["item_term"]`` records how
  it was built (method, lambda, neighbours, blend weight); serving needs nothing from it.

Older versions: :meth:`movierec.store.ModelStore.load` normalises what it reads (:func:`normalize`),
so readers see one set of keys. The data snapshot is ``manifest["data_snapshot"]`` (early trainers
wrote it under ``data`` only); ``rating_scale`` is ``[lo, hi]`` (it was also written as
``{"min": lo, "max": hi}``; ``None`` when neither form can be read); and ``rank_bias`` is always
among the tensors (without one: the ``movie_bias`` for ``dot``, zeros for ``nn``, which is the
ranking score defined above).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from movierec.item_term import ItemTerm, ItemTermError

FORMAT_VERSION = 1
MODEL_KINDS = ("dot", "nn")
REQUIRED_TENSORS = ("user_ids", "movie_ids", "user_factors", "movie_factors", "user_bias", "movie_bias")
DERIVED_TENSORS = ("movie_norm", "movie_h1")
#: Rows per block when a derived tensor or a check walks the movies: bounds the temporary memory
#: (a 1M-movie model is checked in 64k-row steps, not with a catalogue-sized temporary).
BLOCK_ROWS = 65_536
REQUIRED_MANIFEST_KEYS = ("format_version", "version", "kind", "factors", "y_range", "rating_scale", "global_bias",
                          "counts", "weights_sha256")


class StoreError(RuntimeError):
    """The model store or a version in it is unusable; the message says why."""


class CorruptModelError(StoreError):
    """A version exists but fails validation (truncated, mismatched, non-finite, not our format)."""


@dataclass(frozen=True)
class ModelArtifact:
    """A validated model version: its manifest and its tensors (read-only numpy arrays), normalised
    (see :func:`normalize`)."""

    version: int
    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, np.ndarray]

    @property
    def kind(self) -> str:
        """``dot`` or ``nn``."""
        return str(self.manifest["kind"])


def _rating_scale(value: object) -> list[float] | None:
    """``[lo, hi]`` from either stored form of ``rating_scale``; None when neither applies."""
    try:
        if isinstance(value, (list, tuple)) and len(value) >= 2:
            return [float(value[0]), float(value[1])]
        if isinstance(value, dict) and "min" in value and "max" in value:
            return [float(value["min"]), float(value["max"])]
    except (TypeError, ValueError) as exc:
        raise CorruptModelError(f"rating_scale {value!r} is not numeric") from exc
    return None


def normalize(manifest: Mapping[str, Any],
              tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A validated version as every reader sees it: the older keys and forms mapped onto the current ones.

    Applied once by :meth:`movierec.store.ModelStore.load` (see the module docstring for what changes); the
    files themselves are left as they were written.
    """
    manifest = dict(manifest)
    manifest["data_snapshot"] = manifest.get("data_snapshot") or manifest.get("data")
    manifest["rating_scale"] = _rating_scale(manifest.get("rating_scale"))
    tensors = dict(tensors)
    if "rank_bias" not in tensors:
        if manifest["kind"] == "dot":
            tensors["rank_bias"] = tensors["movie_bias"]
        else:
            rank_bias = np.zeros(len(tensors["movie_ids"]), dtype=np.float32)
            rank_bias.setflags(write=False)
            tensors["rank_bias"] = rank_bias
    for name, array in derive(manifest, tensors).items():
        array.setflags(write=False)
        tensors[name] = array
    return manifest, tensors


def first_layer_index(tensors: Mapping[str, np.ndarray]) -> int | None:
    """N of the first ``mlp.N`` layer (``nn`` models), None without layers."""
    indices = {int(name.split(".")[1]) for name in tensors if name.startswith("mlp.") and name.endswith(".weight")}
    return min(indices) if indices else None


def derive(manifest: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The derived tensors ``tensors`` lacks (see the table above), computed block by block."""
    movies = tensors["movie_factors"]
    out: dict[str, np.ndarray] = {}
    if "movie_norm" not in tensors:
        norm = np.empty(len(movies), dtype=np.float32)
        for start in range(0, len(movies), BLOCK_ROWS):
            block = movies[start:start + BLOCK_ROWS]
            norm[start:start + BLOCK_ROWS] = np.sqrt(np.einsum("ij,ij->i", block, block))
        out["movie_norm"] = norm
    first = first_layer_index(tensors)
    if manifest["kind"] == "nn" and first is not None and "movie_h1" not in tensors:
        k = movies.shape[1]
        w_movie = np.ascontiguousarray(np.asarray(tensors[f"mlp.{first}.weight"], dtype=np.float32)[:, k:].T)
        h1 = np.empty((len(movies), w_movie.shape[1]), dtype=np.float32)
        for start in range(0, len(movies), BLOCK_ROWS):
            np.matmul(movies[start:start + BLOCK_ROWS], w_movie, out=h1[start:start + BLOCK_ROWS])
        out["movie_h1"] = h1
    return out


def all_finite(array: np.ndarray) -> bool:
    """True when no element of ``array`` is NaN or infinite (checked in blocks: no array-sized temporary)."""
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    return all(bool(np.isfinite(rows[i:i + BLOCK_ROWS]).all()) for i in range(0, len(rows), BLOCK_ROWS))


def validate(manifest: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    """Check that a manifest and its tensors form a usable model; raise CorruptModelError if not."""
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise CorruptModelError(f"manifest lacks {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise CorruptModelError(f"format_version {manifest['format_version']!r} is not {FORMAT_VERSION}")
    if manifest["kind"] not in MODEL_KINDS:
        raise CorruptModelError(f"unknown model kind {manifest['kind']!r}")
    absent = [name for name in REQUIRED_TENSORS if name not in tensors]
    if absent:
        raise CorruptModelError(f"weights lack tensors {', '.join(absent)}")
    user_ids, movie_ids = tensors["user_ids"], tensors["movie_ids"]
    n, m, k = len(user_ids), len(movie_ids), int(manifest["factors"])
    expected = {
        "user_ids": (n,), "movie_ids": (m,), "user_factors": (n, k), "movie_factors": (m, k),
        "user_bias": (n,), "movie_bias": (m,),
    }
    for name in ("rank_bias", "movie_norm"):
        if name in tensors:
            expected[name] = (m,)
    if "movie_h1" in tensors:
        expected["movie_h1"] = (m, tensors["movie_h1"].shape[-1])
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise CorruptModelError(f"tensor {name} has shape {tuple(tensors[name].shape)}, manifest says {shape}")
    counts = manifest["counts"]
    if counts.get("users") != n or counts.get("movies") != m:
        raise CorruptModelError(f"manifest counts {counts} do not match tensors ({n} users, {m} movies)")
    for name in ("user_ids", "movie_ids"):
        ids = tensors[name]
        if ids.dtype != np.int64 or (len(ids) > 1 and not np.all(np.diff(ids) > 0)):
            raise CorruptModelError(f"{name} must be strictly increasing int64")
    for name, array in tensors.items():
        if array.dtype.kind == "f" and not all_finite(array):
            raise CorruptModelError(f"tensor {name} holds NaN or infinity")
    lo, hi = manifest["y_range"]
    if not lo < hi:
        raise CorruptModelError(f"y_range {manifest['y_range']} is empty")
    if manifest["kind"] == "nn" and not any(key.startswith("mlp.") for key in tensors):
        raise CorruptModelError("nn model without mlp layers")
    try:
        ItemTerm.from_tensors(tensors, m)
    except ItemTermError as exc:
        raise CorruptModelError(str(exc)) from exc
