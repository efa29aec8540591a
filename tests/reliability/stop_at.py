"""Run a real program and freeze it (SIGSTOP) at an exact step of ``ModelStore.publish``, so that a
test can SIGKILL it there: the kill then lands at a known point instead of wherever the scheduler
happens to be.

    python -m tests.reliability.stop_at cli train --source u.data ...   # the real `movierec` CLI
    python -m tests.reliability.stop_at publish STORE SEED              # publish a synthetic model

``MOVIEREC_STOP_AT=N`` freezes the process just before the N-th filesystem step of the store
module (1-based; 0 or unset: never). The steps, in publish order, are the calls of ``save_file``
(``partial`` step: half the file written, then frozen), ``_fsync``, ``os.rename`` and
``os.replace`` -- weights written, weights fsynced, manifest fsynced, temp dir fsynced, renamed
into place, store fsynced, CURRENT written and replaced, and the renames of pruning. Each step
is announced on stderr as ``STEP n name`` before it runs; ``STOPPED n name`` when frozen there.
Nothing else is changed: the code that runs is the product's.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from pathlib import Path

import movierec.store as store_module

STOP_AT = int(os.environ.get("MOVIEREC_STOP_AT", "0") or 0)
_count = 0
_out = sys.stderr


def _step(name: str) -> bool:
    """Count a step; freeze here if it is the chosen one. True if this step is the stop point."""
    global _count
    _count += 1
    print(f"STEP {_count} {name}", file=_out, flush=True)
    return _count == STOP_AT


def _freeze(name: str) -> None:
    print(f"STOPPED {_count} {name}", file=_out, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


def _install() -> None:
    real_save, real_fsync = store_module.save_file, store_module._fsync

    def save_file(arrays, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _step("save_file (half written)"):
            from safetensors.numpy import save

            data = save(arrays)
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
            _freeze("save_file (half written)")
        return real_save(arrays, path, *args, **kwargs)

    def fsync(path):  # type: ignore[no-untyped-def]
        if _step(f"fsync {Path(path).name}"):
            _freeze(f"fsync {Path(path).name}")
        return real_fsync(path)

    shim = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})

    def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _step(f"rename {Path(src).name} -> {Path(dst).name}"):
            _freeze(f"rename {Path(src).name} -> {Path(dst).name}")
        return os.rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _step(f"replace {Path(src).name} -> {Path(dst).name}"):
            _freeze(f"replace {Path(src).name} -> {Path(dst).name}")
        return os.replace(src, dst, *args, **kwargs)

    shim.rename, shim.replace = rename, replace
    store_module.save_file = save_file
    store_module._fsync = fsync
    store_module.os = shim  # type: ignore[assignment]


def fork_publish(root: Path, seed: int, keep: int | None, stop: int) -> tuple[int, int]:
    """Fork a child of this (already initialised) process that publishes a synthetic model with the
    stop point at step ``stop``; returns ``(pid, fd)`` where ``fd`` yields its STEP lines.

    Forking skips the interpreter start-up (seconds per kill on a busy machine), so a test can kill
    inside every step many times. The child runs the same store code, then ``os._exit``s.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    code = 1
    try:  # child: never returns into the parent's code (pytest), whatever happens
        global STOP_AT, _out
        os.close(read_fd)
        os.setpgid(0, 0)
        STOP_AT, _out = stop, os.fdopen(write_fd, "w")
        _install()
        from .harness import synthetic_model

        tensors, manifest = synthetic_model(n_users=50, n_movies=40, seed=seed)
        version = store_module.ModelStore(root).publish(tensors, manifest, keep=keep)
        print(f"published {version}", file=_out, flush=True)
        code = 0
    finally:
        os._exit(code)


def main() -> None:
    _install()
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cli":
        from cli import main as cli_main

        sys.argv = ["movierec", *args]
        cli_main()
    elif mode == "publish":
        from .harness import synthetic_model

        root, seed = Path(args[0]), int(args[1])
        keep = int(args[2]) if len(args) > 2 else None
        tensors, manifest = synthetic_model(n_users=50, n_movies=40, seed=seed)
        version = store_module.ModelStore(root).publish(tensors, manifest, keep=keep)
        print(f"published {version}", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
