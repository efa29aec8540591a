"""Ways a model version can be damaged on disk, each applied to a real published version.

Every corruption here leaves the version directory in place under its number, as a disk error,
a half-copied backup or a hostile file would; the store and the API must refuse each of them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from movierec.store import MANIFEST_FILE, WEIGHTS_FILE, sha256_file

from .harness import synthetic_model


def _rewrite_manifest(version_dir: Path, change: Callable[[dict], None], fix_sha: bool = True) -> None:
    path = version_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    if fix_sha:
        manifest["weights_sha256"] = sha256_file(version_dir / WEIGHTS_FILE)
    path.write_text(json.dumps(manifest))


def truncated_half(d: Path, _outside: Path) -> None:
    w = d / WEIGHTS_FILE
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])


def truncated_empty(d: Path, _outside: Path) -> None:
    (d / WEIGHTS_FILE).write_bytes(b"")


def truncated_consistent_sha(d: Path, _outside: Path) -> None:
    """Truncated weights with the manifest's sha256 updated to match: only the parser can tell."""
    truncated_half(d, _outside)
    _rewrite_manifest(d, lambda m: None)


def flipped_byte(d: Path, _outside: Path) -> None:
    w = d / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))


def manifest_counts_mismatch(d: Path, _outside: Path) -> None:
    """The manifest claims other counts than the tensors have (sha256 consistent)."""
    _rewrite_manifest(d, lambda m: m["counts"].update(users=m["counts"]["users"] + 7))


def manifest_factors_mismatch(d: Path, _outside: Path) -> None:
    _rewrite_manifest(d, lambda m: m.update(factors=m["factors"] + 1))


def manifest_for_other_tensors(d: Path, _outside: Path) -> None:
    """Weights of a different shape swapped in, sha256 updated: shapes disagree with the manifest."""
    tensors, _ = synthetic_model(n_users=13, n_movies=11, k=3, seed=99)
    save_file(tensors, str(d / WEIGHTS_FILE))
    _rewrite_manifest(d, lambda m: None)


def manifest_not_json(d: Path, _outside: Path) -> None:
    (d / MANIFEST_FILE).write_text('{"kind": "dot", "factors": ')


def manifest_missing(d: Path, _outside: Path) -> None:
    (d / MANIFEST_FILE).unlink()


def weights_missing(d: Path, _outside: Path) -> None:
    (d / WEIGHTS_FILE).unlink()


def nan_weights(d: Path, _outside: Path) -> None:
    tensors, _ = synthetic_model(n_users=50, n_movies=40)
    tensors["movie_factors"][3, 1] = np.nan
    save_file(tensors, str(d / WEIGHTS_FILE))
    _rewrite_manifest(d, lambda m: None)


def huge_header(d: Path, _outside: Path) -> None:
    """A safetensors header claiming 2**62 bytes of JSON (must not be allocated)."""
    (d / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**62) + b"{}")
    _rewrite_manifest(d, lambda m: None)


class _Payload:
    """Unpickling this creates the marker directory: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def pickle_weights(d: Path, outside: Path) -> None:
    """A pickle where the safetensors file should be, with a matching sha256 in the manifest."""
    (d / WEIGHTS_FILE).write_bytes(pickle.dumps({"user_factors": _Payload(outside / "PICKLE_EXECUTED")}))
    _rewrite_manifest(d, lambda m: None)


def pickle_beside(d: Path, outside: Path) -> None:
    """Extra pickle files next to intact weights (a torch checkpoint left behind): never read."""
    for name in ("model.pt", "model.pkl", "model.bin"):
        (d / name).write_bytes(pickle.dumps(_Payload(outside / "PICKLE_EXECUTED")))
    # Make the version otherwise unusable too, so a pickle fallback would be the only way to load it.
    (d / WEIGHTS_FILE).unlink()


def weights_symlink_outside(d: Path, outside: Path) -> None:
    """model.safetensors is a link to a valid file outside the store."""
    target = outside / "elsewhere.safetensors"
    shutil.copy(d / WEIGHTS_FILE, target)
    (d / WEIGHTS_FILE).unlink()
    (d / WEIGHTS_FILE).symlink_to(target)


def version_symlink_outside(d: Path, outside: Path) -> None:
    """The version directory itself is a link to a complete, valid model outside the store."""
    target = outside / f"copy-of-{d.name}"
    shutil.copytree(d, target)
    shutil.rmtree(d)
    d.symlink_to(target, target_is_directory=True)


CORRUPTIONS: dict[str, Callable[[Path, Path], None]] = {
    "truncated to half": truncated_half,
    "truncated to 0 bytes": truncated_empty,
    "truncated, sha256 updated": truncated_consistent_sha,
    "one byte flipped": flipped_byte,
    "manifest counts differ from tensors": manifest_counts_mismatch,
    "manifest factors differ from tensors": manifest_factors_mismatch,
    "tensors of another model swapped in": manifest_for_other_tensors,
    "manifest not JSON": manifest_not_json,
    "manifest missing": manifest_missing,
    "weights missing": weights_missing,
    "NaN in weights": nan_weights,
    "safetensors header of 2**62 bytes": huge_header,
    "pickle instead of safetensors": pickle_weights,
    "pickle files beside, no safetensors": pickle_beside,
    "weights symlinked outside the store": weights_symlink_outside,
    "version dir symlinked outside the store": version_symlink_outside,
}
