"""``movierec train`` as a distributed job: ``torchrun --nproc-per-node N -m trainer.distributed [train options]``.

Also ``movierec train --nproc N``, which launches the same job on this machine (:func:`launch`).
One process per GPU (NCCL) or per CPU socket (gloo); across machines, the same command on every
machine with ``--nnodes``, ``--node-rank`` and a rendezvous endpoint (docs/trainer.md).

Every process loads the same ratings (from ``--source`` or the database) and parameters; before
any training they all-gather a checksum of both and stop unless every process agrees
(:class:`RanksDisagreeError`). The tables' rows are sharded over the processes
(:mod:`trainer.fit.sharded`); process 0 runs the whole pipeline (evaluation, refit, gate) and is
the only one that touches the model store, publishing through its atomic publish at the very
end. The other processes train the same fits in the same order (:func:`trainer.pipeline.training_sets`).
A process that dies makes the others fail in their next collective, so the job stops with the
store unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from trainer import TrainerError

#: Set (to "1") in the processes of a job: ``movierec train`` then runs as one of its ranks.
WORKER_ENV = "MOVIEREC_DISTRIBUTED_WORKER"


class RanksDisagreeError(TrainerError):
    """The processes of a job do not have the same ratings or parameters: stopped before training."""

    exit_code = 6


class RankFailedError(TrainerError):
    """A process of the job failed (crashed, killed, or an error on one rank): nothing was published."""

    exit_code = 7


def checksum(data: Any, params: Any, extra: Sequence[str] = ()) -> bytes:
    """SHA-256 of the ratings (every array the fits read) and the parameters: what all ranks must agree on."""
    h = hashlib.sha256()
    for name in ("user", "movie", "rating", "rated_at", "user_ids", "movie_ids"):
        array = getattr(data, name)
        h.update(name.encode())
        h.update(str(array.dtype).encode())
        h.update(array.tobytes())
    h.update(json.dumps(params.to_dict(), sort_keys=True).encode())
    for item in extra:
        h.update(item.encode())
    return h.digest()


def check_agreement(digest: bytes, group: Any = None) -> None:
    """All-gather every rank's ``digest``; raise RanksDisagreeError (on every rank) unless all are equal."""
    import torch
    import torch.distributed as dist

    mine = torch.tensor(list(digest), dtype=torch.uint8)
    if dist.get_backend(group) == "nccl":
        mine = mine.cuda()
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    differ = [rank for rank, d in enumerate(out) if not torch.equal(d, out[0])]
    if differ:
        raise RanksDisagreeError(f"ranks {', '.join(map(str, differ))} have other ratings or parameters than rank 0 "
                                 "(checksums differ): stopped before training")


def in_worker() -> bool:
    """True inside a process of a distributed job (started by torchrun or :func:`launch`)."""
    return os.environ.get(WORKER_ENV) == "1"


def launched_bare() -> bool:
    """True in a process that torchrun started as part of a job of several, outside ``trainer.distributed``."""
    return not in_worker() and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def run_rank(load: Callable[[], Any], params: Any, device: str, run: Callable[[Callable[..., Any]], Any],
             log: Callable[[str], None]) -> Any:
    """This process's part of the job: join it, agree on the data, then train (and on rank 0, ``run`` the
    pipeline with the distributed fitter and publish). Returns ``run``'s result on rank 0, None elsewhere."""
    import torch
    import torch.distributed as dist

    from trainer.fit import resolve
    from trainer.fit.params import for_data
    from trainer.fit.sharded import sharded_fit
    from trainer.pipeline import MIN_RATINGS, training_sets

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    engine = resolve(device, "torch", params.model, cuda_index=local_rank)
    if engine.device.startswith("cuda"):
        torch.cuda.set_device(engine.torch_device())
    backend = "nccl" if engine.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        log(f"rank {rank}/{world} (pid {os.getpid()}): {backend} on {engine.device}")
        data = load()
        check_agreement(checksum(data, params, (engine.kind,)))
        fitter = partial(sharded_fit, engine=engine)
        if rank == 0:
            return run(fitter)
        if len(data) >= MIN_RATINGS:  # rank 0 stops with NoDataError otherwise, before any fit
            sized = for_data(params, len(data), data.n_movies)  # as rank 0's pipeline does
            for i, (train, _) in enumerate(training_sets(data)):
                sharded_fit(train, sized, engine=engine)
                log(f"rank {rank}: fit {i + 1}/3 done")
        return None
    except dist.DistError as exc:  # a peer died or hung up: one line, not a traceback
        raise RankFailedError(f"rank {rank}: another process of the job failed ({exc}); "
                              "nothing was published") from exc
    finally:
        dist.destroy_process_group()


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m trainer.distributed *args`` as ``nproc`` processes on this machine (torch's elastic
    launcher, what torchrun runs); return rank 0's exit status, or RankFailedError's when another rank failed."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher logs every failed process with a traceback-like line; ours says it in one line below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"movierec-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    os.environ[WORKER_ENV] = "1"
    try:
        elastic_launch(config, sys.executable)("-m", "trainer.distributed", *args)
    except ChildFailedError as exc:
        failures = exc.failures
        first = failures.get(min(failures)) if failures else None
        codes = {rank: f.exitcode for rank, f in failures.items()}
        # rank 0 said why (the gate refused, ranks disagreed): its exit status, also when the launcher
        # then stopped the other ranks with a signal (negative codes) before they ended on their own
        if 0 in codes and codes[0] > 0 and all(c == codes[0] or c < 0 for c in codes.values()):
            return codes[0]
        detail = ", ".join(f"rank {rank} exit {code}" for rank, code in sorted(codes.items()))
        # Whether rank 0 had published first is for the caller to tell (it knows the store): rank 0 publishes
        # only after the last collective, so a rank that fails before then stops it.
        print(f"error: a process of the distributed job failed ({detail})"
              + (f", first at {first.timestamp}" if first is not None else ""), file=sys.stderr)
        return RankFailedError.exit_code
    finally:
        os.environ.pop(WORKER_ENV, None)
    return 0


def main() -> None:
    """``python -m trainer.distributed``: ``movierec train``'s options, run as one rank of a job."""
    os.environ[WORKER_ENV] = "1"
    import typer

    from trainer.cli import train

    typer.run(train)


if __name__ == "__main__":
    main()
