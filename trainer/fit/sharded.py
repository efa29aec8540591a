"""The ``dot`` step of a distributed job: the tables' rows sharded over its processes (torch.distributed).

Process ``p`` of ``W`` owns the rows ``r`` with ``r % W == p`` of both tables (and their Adam
moments): no process holds a whole table while training, so the tables can outgrow one device.
Every process reads every rating and draws the same order and negatives from the same seed;
each trains its ``1/W`` slice of every batch (:class:`trainer.fit.torch_dot.TorchDotStep` with
``part``). A step exchanges only the rows the batch touched, never a table:

1. ``pull``: the processes all-gather the (distinct) row ids they need; each one all-gathers
   the rows it owns among them; everyone reads its rows from the gathered set;
2. ``push``: each process sums its gradients per distinct row and all-gathers them (with a flag:
   was the row a positive here, for the movie bias rule); each owner sums what arrived for its
   rows and runs lazy Adam on them (:class:`trainer.fit.lazy_adam.RowAdam`).

So a step's traffic is ``W x`` the rows a batch touches, and a job computes what one process
would on the same batch (to float summation order): the tests hold a 2-process job to the same
quality as one process. all_gather rather than all_to_all because gloo, the CPU backend, has
all_gather on every platform; each process then receives ``W`` times what it strictly needs.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from trainer import kernels as K
from trainer.data import Ratings
from trainer.fit.engine import Engine
from trainer.fit.lazy_adam import RowAdam
from trainer.fit.loop import Progress, run_epochs
from trainer.fit.params import FitParams, History
from trainer.fit.sampling import Ranking
from trainer.fit.threads import set_threads
from trainer.fit.torch_dot import TorchDotStep, table_rows
from trainer.models import DotProductBias


def _all_gather_padded(x: torch.Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> list[torch.Tensor]:
    """Every process's ``x`` (first dimension ``sizes[p]`` on process p), through one padded all_gather."""
    width = max(sizes) if sizes else 0
    pad = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
    pad[: x.shape[0]] = x
    out = [torch.empty_like(pad) for _ in sizes]
    dist.all_gather(out, pad, group=group)
    return [o[:n] for o, n in zip(out, sizes, strict=True)]


def _sizes(n: int, device: torch.device, group: dist.ProcessGroup | None, world: int) -> list[int]:
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(out, mine, group=group)
    return [int(o) for o in out]


class _Shard:
    """One table's rows owned here (``rows[r // W]`` holds global row ``r``, ``r % W == rank``) and their Adam."""

    def __init__(self, full: torch.Tensor, rank: int, world: int, device: torch.device, tail_from: int | None) -> None:
        self.rank, self.world, self.n_rows, self.tail_from = rank, world, full.shape[0], tail_from
        self.rows = full[rank::world].contiguous().to(device)
        self.adam = RowAdam(self.rows, "sparse")
        self.requests: list[torch.Tensor] = []
        self.inverse = torch.empty(0)

    def pull(self, index: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        """The rows ``index`` (global ids), gathered from their owners; remembers the requests for :meth:`push`."""
        world, dev = self.world, self.rows.device
        mine, self.inverse = torch.unique(index, return_inverse=True)
        self.requests = _all_gather_padded(mine, _sizes(mine.shape[0], dev, group, world), group)
        union = torch.unique(torch.cat(self.requests))
        owner = union % world
        counts = torch.bincount(owner, minlength=world).tolist()
        owned = union[owner == self.rank]
        supplied = _all_gather_padded(self.rows.index_select(0, owned // world), counts, group)
        # union is sorted, and every owner's part of it too: the rows of id x sit at its place in the
        # owners' concatenation, which sorting the ids by (owner, id) gives.
        by_owner = torch.cat([union[owner == p] for p in range(world)])
        order = torch.argsort(by_owner)
        table = torch.cat(supplied)[order]  # rows in the order of union
        return table[torch.searchsorted(union, mine)][self.inverse]

    def push(self, grad: torch.Tensor, positive: torch.Tensor | None, lr: float, t: int,
             group: dist.ProcessGroup | None) -> None:
        """Sum ``grad`` (rows of the last :meth:`pull`'s index) per row, send them to their owners, step."""
        world, dev = self.world, self.rows.device
        n = self.requests[self.rank].shape[0]
        summed = torch.zeros((n, grad.shape[1] + 1), dtype=grad.dtype, device=dev)
        summed[:, :-1].index_add_(0, self.inverse, grad)
        if positive is not None:  # last column: the row was one of this process's positives
            summed[:, -1].index_fill_(0, self.inverse[positive], 1.0)
        arrived = _all_gather_padded(summed, [r.shape[0] for r in self.requests], group)
        ids, grads = torch.cat(self.requests), torch.cat(arrived)
        keep = ids % world == self.rank
        ids, grads = ids[keep] // world, grads[keep]
        if self.tail_from is None:
            self.adam.step(ids, grads[:, :-1], lr, t)
            return
        first = torch.argsort(grads[:, -1], descending=True, stable=True)  # positives first: the tail rule
        ids, grads = ids[first], grads[first]
        self.adam.step(ids, grads[:, :-1], lr, t, tail_from=self.tail_from, tail_limit=int(grads[:, -1].sum()))

    def full(self, group: dist.ProcessGroup | None) -> torch.Tensor | None:
        """The whole table on process 0 (its shards gathered and interleaved back); None elsewhere."""
        sizes = [len(range(p, self.n_rows, self.world)) for p in range(self.world)]
        pad = torch.zeros((max(sizes), self.rows.shape[1]), dtype=self.rows.dtype, device=self.rows.device)
        pad[: self.rows.shape[0]] = self.rows
        parts = [torch.empty_like(pad) for _ in sizes] if self.rank == 0 else None
        dist.gather(pad, parts, dst=0, group=group)
        if parts is None:
            return None
        whole = torch.empty((self.n_rows, self.rows.shape[1]), dtype=self.rows.dtype, device=self.rows.device)
        for p, (part, n) in enumerate(zip(parts, sizes, strict=True)):
            whole[p::self.world] = part[:n]
        return whole


class ShardedTables:
    """:class:`trainer.fit.torch_dot.Tables` whose rows are sharded over the processes of ``group``."""

    def __init__(self, users: torch.Tensor, movies: torch.Tensor, device: torch.device,
                 group: dist.ProcessGroup | None = None) -> None:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        self.group, self.rank = group, rank
        k = users.shape[1] - 1
        self.users = _Shard(users, rank, world, device, None)
        self.movies = _Shard(movies, rank, world, device, k + K.MOVIE_BIAS)

    def pull(self, users: torch.Tensor, movies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.pull(users, self.group), self.movies.pull(movies, self.group)

    def push(self, users: torch.Tensor, gu: torch.Tensor, movies: torch.Tensor, gm: torch.Tensor, positives: int,
             lr: float, t: int) -> None:
        self.users.push(gu, None, lr, t, self.group)
        positive = torch.zeros(movies.shape[0], dtype=torch.bool, device=movies.device)
        positive[:positives] = True
        self.movies.push(gm, positive, lr, t, self.group)

    def full(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        users, movies = self.users.full(self.group), self.movies.full(self.group)
        return None if users is None or movies is None else (users, movies)


def sharded_fit(train: Ratings, params: FitParams, valid: Ratings | None = None, progress: Progress | None = None,
                *, engine: Engine, group: dist.ProcessGroup | None = None) -> tuple[DotProductBias, History]:
    """:func:`trainer.fit.fit` for the ``dot`` model as one process of a distributed job (every process calls it
    with the same data and parameters). Process 0 gets the whole model (validated each epoch when ``valid``
    is given; other processes ignore ``valid`` and ``progress``); the others a model whose tables are stale."""
    from trainer.fit import make_model  # the package imports this module's siblings; make_model lives there

    if params.model != "dot":
        raise ValueError("a distributed job trains the dot model")
    if params.ensemble > 1:  # the members one after the other, each a distributed fit
        from trainer.fit.ensemble import fit_ensemble

        return fit_ensemble(train, params, valid, progress,
                            lambda tr, p, v, pr: sharded_fit(tr, p, v, pr, engine=engine, group=group))
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    threads = set_threads()
    gen = torch.Generator().manual_seed(params.seed)
    params = dataclasses.replace(params, batch_size=max(1, min(params.batch_size, len(train))))
    model = make_model(params, train.n_users, train.n_movies, float(train.rating.mean()) if len(train) else 3.5, gen)
    assert isinstance(model, DotProductBias)
    ranking = Ranking.of(train, params)
    device = engine.torch_device()
    tables = ShardedTables(*table_rows(model), device, group)

    def reduce(x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, group=group)
        return x

    step = TorchDotStep(model, train, params, ranking, engine, tables=tables, part=(rank, world), reduce=reduce)
    history = run_epochs(step, train, params, ranking, valid if rank == 0 else None, gen,
                         progress if rank == 0 else None)
    history.threads, history.engine, history.world_size = threads, engine.label, world
    return model, history
