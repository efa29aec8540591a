"""The model store: versioned model directories, TensorFlow-Serving style.

Layout::

    MOVIEREC_MODEL_STORE/
        1/  manifest.json  model.safetensors  [report PNGs]
        2/  ...
        CURRENT        # text file holding the serving version; absent means "highest version"
        CANDIDATE      # JSON {"version", "share", "salt"}: a version serving a hashed share of users
        .lock          # flock taken while publishing, pruning or rolling back
        .tmp-*/        # a version being written; never read, removed when found stale

A version directory is complete the moment it appears: the trainer writes into ``.tmp-*`` and
renames it into place. ``manifest.json`` records the sha256 of ``model.safetensors``, so a
truncated or swapped weights file is refused on load. Only safetensors and JSON are ever read:
nothing in the store is executable (no pickle).

What a version holds (the tensors, the manifest keys, how a rating and a ranking score are
computed from them) and how older versions are read is defined in :mod:`movierec.model_format`;
this module is the directory around it: publishing, loading, rollback, pruning and the report
images a version carries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from movierec.mapped_tensors import MalformedTensorsError, map_tensors
from movierec.model_format import (
    FORMAT_VERSION,
    CorruptModelError,
    ModelArtifact,
    StoreError,
    derive,
    normalize,
    validate,
)

__all__ = ["CANDIDATE_FILE", "CURRENT_FILE", "Candidate", "FORMAT_VERSION", "MANIFEST_FILE", "REPORT_FILE_NAME",
           "WEIGHTS_FILE", "CorruptModelError", "ModelArtifact", "ModelStore", "StoreError", "map_safetensors",
           "sha256_file", "validate"]

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
CURRENT_FILE = "CURRENT"
CANDIDATE_FILE = "CANDIDATE"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
#: Report images a version may carry (written by the trainer, served by the API): plain names only.
REPORT_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.png$")


@dataclass(frozen=True)
class Candidate:
    """A version serving a stable share of users beside CURRENT (see :meth:`ModelStore.set_candidate`).

    A user belongs to the candidate's share when the hash of ``salt`` and their id, read as a
    fraction in [0, 1), is below ``share``: the same users every time, in every process, and a
    larger share keeps the users of a smaller one (same salt).
    """

    version: int
    share: float
    salt: str

    def serves(self, user_id: int) -> bool:
        """True if ``user_id`` is in the candidate's share."""
        return user_fraction(self.salt, user_id) < self.share

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "share": self.share, "salt": self.salt}


def user_fraction(salt: str, user_id: int) -> float:
    """A user's stable position in [0, 1) under ``salt`` (blake2b: fast, same on every platform)."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    """A directory of numbered model versions with atomic publish, load, rollback and pruning."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Complete versions present in the store, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if _is_version_name(entry.name) and entry.is_dir() and not entry.is_symlink():
                found.append(int(entry.name))
        return sorted(found)

    def _next_version(self) -> int:
        # Past every numbered entry, not only valid versions: a stray file or symlink named "7"
        # would otherwise make every later publish fail on the rename.
        taken = [int(e.name) for e in self.root.iterdir() if _is_version_name(e.name)] if self.root.is_dir() else []
        return max(taken, default=0) + 1

    def current_version(self) -> int | None:
        """The version to serve: the one named in CURRENT if it still exists, else the highest."""
        versions = self.versions()
        if not versions:
            return None
        pointer = self.root / CURRENT_FILE
        with contextlib.suppress(OSError, ValueError):
            named = int(pointer.read_text().strip())
            if named in versions:
                return named
        return versions[-1]

    def candidate(self) -> Candidate | None:
        """The candidate pointer, or None when there is none (or it is unreadable, or names a version
        no longer here or the current one: serving CURRENT to everybody is the safe reading)."""
        try:
            data = json.loads((self.root / CANDIDATE_FILE).read_text(encoding="utf-8"))
            candidate = Candidate(int(data["version"]), float(data["share"]), str(data["salt"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not 0.0 <= candidate.share <= 1.0 or candidate.version not in self.versions():
            return None
        if candidate.version == self.current_version():  # e.g. `models use N` or a rollback onto it
            return None
        return candidate

    def version_path(self, version: int) -> Path:
        """Directory of ``version``; refuses anything that would resolve outside the store."""
        if not isinstance(version, int) or version < 1:
            raise StoreError(f"invalid version {version!r}")
        path = self.root / str(version)
        if path.is_symlink() or not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"version {version} points outside the model store")
        return path

    def read_manifest(self, version: int) -> dict[str, Any]:
        """The parsed manifest of ``version`` (not validated against the weights)."""
        path = self.version_path(version) / MANIFEST_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CorruptModelError(f"version {version} has no {MANIFEST_FILE}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptModelError(f"version {version}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc

    def load(self, version: int | None = None) -> ModelArtifact:
        """Load and validate ``version`` (default: the current one).

        Raises StoreError when the store is empty and CorruptModelError when the version is damaged.
        """
        if version is None:
            version = self.current_version()
            if version is None:
                raise StoreError(f"no model in {self.root}; run `movierec train`")
        path = self.version_path(version)
        manifest = self.read_manifest(version)
        weights = path / WEIGHTS_FILE
        if not weights.is_file() or weights.is_symlink():
            raise CorruptModelError(f"version {version} has no {WEIGHTS_FILE}")
        digest = sha256_file(weights)
        if digest != manifest.get("weights_sha256"):
            raise CorruptModelError(f"version {version}: {WEIGHTS_FILE} does not match the sha256 in its manifest")
        tensors = map_safetensors(weights, f"version {version}: unreadable {WEIGHTS_FILE}")
        if manifest.get("version") != version:
            raise CorruptModelError(f"version {version}: manifest says version {manifest.get('version')}")
        validate(manifest, tensors)
        manifest, tensors = normalize(manifest, tensors)
        return ModelArtifact(version=version, path=path, manifest=manifest, tensors=tensors)

    def report_files(self, version: int) -> list[str]:
        """Names of the report PNGs in ``version``'s directory (plain files only, sorted)."""
        try:
            path = self.version_path(version)
            return sorted(p.name for p in path.iterdir()
                          if p.is_file() and not p.is_symlink() and REPORT_FILE_NAME.match(p.name))
        except (OSError, StoreError):
            return []

    def report_file(self, version: int, name: str) -> Path | None:
        """Path of report PNG ``name`` of ``version``; None if the name is not a plain PNG name, the
        file is absent or a symlink, or it resolves outside the version (no traversal)."""
        if not REPORT_FILE_NAME.match(name):
            return None
        try:
            directory = self.version_path(version)
            path = directory / name
            if path.is_symlink() or not path.is_file() or path.resolve().parent != directory.resolve():
                return None
        except (OSError, StoreError):
            return None
        return path

    def list(self) -> list[dict[str, Any]]:
        """Manifests of all versions, oldest first, each with ``version`` and ``current`` set.

        A version whose manifest cannot be read is listed with an ``error`` instead of hiding it.
        """
        current = self.current_version()
        rows = []
        for version in self.versions():
            try:
                manifest = self.read_manifest(version)
            except StoreError as exc:
                manifest = {"error": str(exc)}
            rows.append({**manifest, "version": version, "current": version == current})
        return rows

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on the store for publish, prune and rollback (one writer at a time)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(
        self,
        tensors: Mapping[str, np.ndarray],
        manifest: Mapping[str, Any],
        extra_files: Callable[[Path], None] | None = None,
        keep: int | None = None,
        make_current: bool = True,
    ) -> int:
        """Write a new version atomically and make it current; return its number.

        With ``make_current=False`` the served version stays what it was (a version to try as a
        candidate first); in an empty store the new version is served anyway, as the only one.

        ``manifest`` gets ``format_version``, ``version``, ``weights_sha256`` and ``created_at``
        filled in. ``extra_files(directory)`` may write more files (report PNGs) into the version
        before it becomes visible. The model is validated before anything is renamed into place,
        so an invalid model never reaches readers; if anything fails the store is left as it was.
        ``keep`` prunes to that many newest versions afterwards.
        """
        arrays = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
        with self.lock():
            self._remove_stale_tmp()
            previous = self.current_version()
            version = self._next_version()
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))
            try:
                full = {
                    **manifest,
                    "format_version": FORMAT_VERSION,
                    "version": version,
                    "created_at": manifest.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                validate({**full, "weights_sha256": ""}, arrays)  # sane shapes before deriving from them
                arrays.update(derive(full, arrays))  # mapped by every server, not recomputed by each
                weights = tmp / WEIGHTS_FILE
                save_file(arrays, str(weights))
                _fsync(weights)
                full["weights_sha256"] = sha256_file(weights)
                validate(full, arrays)
                if extra_files is not None:
                    extra_files(tmp)
                manifest_path = tmp / MANIFEST_FILE
                manifest_path.write_text(json.dumps(full, indent=2, sort_keys=True, default=_json_default) + "\n")
                _fsync(manifest_path)
                os.chmod(tmp, 0o755)
                _fsync(tmp)
                os.rename(tmp, self.root / str(version))
                _fsync(self.root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            # Without a CURRENT file the highest version is served: pin the previous one explicitly.
            self._write_current(version if make_current or previous is None else previous)
            if keep is not None:
                self._prune(keep)
        return version

    def rollback(self) -> int:
        """Make the version before the current one current; return it. Raises StoreError if none."""
        with self.lock():
            current = self.current_version()
            older = [v for v in self.versions() if current is not None and v < current]
            if not older:
                raise StoreError("no earlier version to roll back to")
            for candidate in reversed(older):
                try:
                    self.load(candidate)
                except StoreError:
                    continue
                self._write_current(candidate)
                return candidate
            raise StoreError("every earlier version is damaged; nothing to roll back to")

    def set_candidate(self, version: int, share: float, salt: str | None = None) -> Candidate:
        """Serve ``version`` to a hashed ``share`` of users (0..1) after checking that it loads.

        Without ``salt``, the salt of the current candidate pointer is kept when it names the same
        version (so growing the share keeps the users already on it), else a new one is drawn.
        """
        if not 0.0 <= share <= 1.0:
            raise StoreError(f"share must be between 0 and 1, got {share}")
        with self.lock():
            self.load(version)
            if version == self.current_version():
                raise StoreError(f"version {version} is already current; a candidate must be another version")
            if salt is None:
                old = self.candidate()
                salt = old.salt if old is not None and old.version == version else os.urandom(8).hex()
            candidate = Candidate(version, share, salt)
            self._write_pointer(CANDIDATE_FILE, json.dumps(candidate.to_dict()) + "\n")
            return candidate

    def clear_candidate(self) -> Candidate | None:
        """Remove the candidate pointer (CURRENT serves everybody again); return what it was."""
        with self.lock():
            old = self.candidate()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / CANDIDATE_FILE)
                _fsync(self.root)
            return old

    def promote(self) -> int:
        """Make the candidate current and remove the pointer; return its version."""
        with self.lock():
            candidate = self.candidate()
            if candidate is None:
                raise StoreError("there is no candidate to promote; set one with `movierec models candidate N`")
            self.load(candidate.version)
            # CURRENT first: a crash in between leaves the new version current and still named as
            # candidate, which serves it to everybody either way.
            self._write_current(candidate.version)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / CANDIDATE_FILE)
                _fsync(self.root)
            return candidate.version

    def set_current(self, version: int) -> None:
        """Make ``version`` current after checking that it loads."""
        with self.lock():
            self.load(version)
            self._write_current(version)

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions (never the current one); return what went."""
        with self.lock():
            return self._prune(keep)

    def _prune(self, keep: int) -> list[int]:
        keep = max(1, keep)
        current = self.current_version()
        candidate = self.candidate()
        versions = self.versions()
        doomed = [v for v in versions[:-keep] if v != current and (candidate is None or v != candidate.version)]
        for version in doomed:
            # Rename first so a reader never sees a half-deleted version under its number.
            trash = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))
            os.rename(self.root / str(version), trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        return doomed

    def _write_current(self, version: int) -> None:
        self._write_pointer(CURRENT_FILE, f"{version}\n")

    def _write_pointer(self, name: str, text: str) -> None:
        # Written aside and renamed over the old one: a reader sees the old pointer or the new one.
        tmp = self.root / f"{TMP_PREFIX}{name.lower()}-{os.getpid()}"
        tmp.write_text(text)
        _fsync(tmp)
        os.replace(tmp, self.root / name)
        _fsync(self.root)

    def _remove_stale_tmp(self) -> None:
        # Called under the lock: every writer holds it, so any temp entry left is a dead writer's.
        for entry in self.root.glob(f"{TMP_PREFIX}*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def map_safetensors(path: Path, what: str) -> dict[str, np.ndarray]:
    """The tensors of a version's weights file, memory-mapped read-only (:func:`map_tensors`);
    ``what`` starts the message of the :class:`CorruptModelError` raised for a malformed file."""
    try:
        return map_tensors(path)
    except MalformedTensorsError as exc:
        raise CorruptModelError(f"{what} ({exc})") from exc


def _is_version_name(name: str) -> bool:
    # str.isdigit() is also true for "²" and other non-ASCII digits, which int() refuses.
    return name.isascii() and name.isdigit()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
