"""Compiled (numba) kernels of the ``dot`` training step; :mod:`trainer.fit.dot` drives them.

Why compiled kernels rather than torch ops: a step of the ``dot`` loop is a few dozen small
operations on (batch x factors) and (batch x negatives) arrays plus a row-sparse optimiser
update. As torch ops each one is a separate pass over memory with its own dispatch, and the
sparse update needs ``unique`` (a sort) per table per step; on 2 cores that loop ran at
0.3-0.5M ratings/s, and 2 OpenMP threads made it *slower* (the ops are too small to split). Here
each kernel does its whole part of the step in one pass per row, the three matrix products of
the sampled softmax stay BLAS calls through torch, and the sparse update finds the rows a batch
touched with a slot table instead of a sort, each thread for its own rows.

Determinism: every ``prange`` loop writes only its own rows, and gradients of a table row
that several ratings share are summed in batch order by the thread that owns that row, so a
fixed seed gives the same model whatever the thread count (the BLAS products aside).

Fast math without ``nnan``/``ninf``: a diverging run must still produce NaN/inf for
:func:`trainer.fit.fit` to notice. ``error_model="numpy"``: a float division by zero gives inf
like numpy instead of raising, which is what lets LLVM vectorise the loops that divide (the
Python error check is a branch per element; with it the Adam update ran 4x slower).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_F32 = np.float32


#: How many rows ahead the row loops prefetch. The rows a batch touches are random, so each
#: one is a cache miss; asking for the next rows while working on this one overlaps the misses
#: (measured: the Adam update of 4,096 random rows of a 162,000-row table, 164 -> 126 ns a row).
PREFETCH_AHEAD = 4


@intrinsic
def _prefetch(typingctx, array, row, col):  # type: ignore[no-untyped-def]
    """Hint the CPU to fetch the cache line of ``array[row, col]`` (2-D array) for writing."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        strides = [builder.extract_value(arr.strides, d) for d in range(2)]
        offset = builder.add(builder.mul(args[1], strides[0]), builder.mul(args[2], strides[1]))
        address = builder.add(builder.ptrtoint(arr.data, ir.IntType(64)), offset)
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(),
                                                                                   [i8p, i32, i32, i32]))
        # write access, high locality, data cache
        builder.call(fn, [builder.inttoptr(address, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(array, types.int64, types.int64), codegen


@njit(inline="always")
def _prefetch_row(array: np.ndarray, row: int) -> None:
    """Prefetch every cache line of one row of a float32/int32 2-D array (16 values a line)."""
    for col in range(0, array.shape[1], 16):
        _prefetch(array, row, col)


#: Columns after the k factors in a user row and a movie row.
USER_BIAS, RANK_BIAS, MOVIE_BIAS = 0, 0, 1


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def rating_rows(users: np.ndarray, movies: np.ndarray, u: np.ndarray, m: np.ndarray, y: np.ndarray,
                lo: np.float32, span: np.float32, g0: np.float32, reg: np.float32, inv_b: np.float32,
                qu: np.ndarray, qm: np.ndarray, gu: np.ndarray, gm: np.ndarray, dot: np.ndarray) -> float:
    """Rating (MSE) term and L2 of one batch, row by row.

    With ``p = lo + span s(z)``, ``z = u·m + b_u + b_m + g0``: ``dL/dz = 2 (p - y) span s(z)(1 - s(z)) / B``;
    the L2 penalty ``wd |row|^2`` per occurrence adds ``reg row`` to the factors' gradients
    (``reg = 2 wd / B``; biases are not penalised). Writes the gathered factors (``qu``, ``qm``),
    the gradient rows (``gu``, ``gm``; the rank-bias column 0, for the ranking term to fill), the
    plain dot product ``dot`` of every rating; returns the sum of squared errors.
    """
    k = qu.shape[1]
    one = _F32(1.0)
    two = _F32(2.0)
    total = 0.0
    n = u.shape[0]
    for i in prange(n):
        if i + PREFETCH_AHEAD < n:
            _prefetch_row(users, u[i + PREFETCH_AHEAD])
            _prefetch_row(movies, m[i + PREFETCH_AHEAD])
        ui, mi = u[i], m[i]
        acc = _F32(0.0)
        for f in range(k):
            a = users[ui, f]
            b = movies[mi, f]
            qu[i, f] = a
            qm[i, f] = b
            acc += a * b
        z = acc + users[ui, k + USER_BIAS] + movies[mi, k + MOVIE_BIAS] + g0
        s = one / (one + np.exp(-z))
        err = s * span + lo - y[i]
        total += err * err
        d = err * s * (one - s) * two * span * inv_b
        dot[i] = acc
        for f in range(k):
            gu[i, f] = reg * qu[i, f] + d * qm[i, f]
            gm[i, f] = reg * qm[i, f] + d * qu[i, f]
        gu[i, k + USER_BIAS] = d
        gm[i, k + RANK_BIAS] = _F32(0.0)
        gm[i, k + MOVIE_BIAS] = d
    return total


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def softmax_shift(x: np.ndarray, dot: np.ndarray, movies: np.ndarray, m: np.ndarray, j: np.ndarray,
                  c: np.ndarray, a: np.float32, x_pos: np.ndarray, top: np.ndarray) -> None:
    """First half of the sampled softmax over [positive, shared negatives] of one batch, row by row.

    On entry ``x[i, t]`` is the logit ``a (u_i·m_{j_t}) + neg_bias[t]`` of each negative; on exit
    it is ``x - top[i]``, where ``top`` is the row's largest logit (the usual shift that keeps
    ``exp`` finite), and ``-inf`` (``exp`` gives 0) where the row takes no part: an accidental
    hit of the row's own positive, or every negative of a row with ``c_i <= 0``. ``x_pos`` gets
    the positive's logit ``a (u·m) + rank_bias[m]``. The exponential itself is left to torch,
    whose ``exp`` is vectorised (numba's is a scalar call per element without Intel's SVML).
    """
    n_neg = x.shape[1]
    k = movies.shape[1] - 2
    gone = -np.inf
    for i in prange(x.shape[0]):
        mi = m[i]
        xp = a * dot[i] + movies[mi, k + RANK_BIAS]
        x_pos[i] = xp
        hi = xp
        for t in range(n_neg):
            hi = max(hi, x[i, t])
        top[i] = hi
        skip = c[i] <= _F32(0.0)
        for t in range(n_neg):
            x[i, t] = gone if (skip or j[t] == mi) else x[i, t] - hi


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def softmax_grad(x: np.ndarray, x_pos: np.ndarray, top: np.ndarray, c: np.ndarray, a: np.float32,
                 coef0: np.float32, qu: np.ndarray, qm: np.ndarray, gu: np.ndarray, gm: np.ndarray) -> float:
    """Second half: from ``x = exp(logit - top)`` to the gradients, row by row.

    On exit ``x[i, t] = dL/dx_neg[i, t]`` (what the two BLAS products that follow need). Per row,
    ``loss = c_i (logsumexp - x_pos)``; with ``coef = coef0 c_i``: ``d_pos = coef (p_pos - 1)``
    (the positive's rank-bias gradient), ``gu += a d_pos m``, ``gm += a d_pos u``. Rows with
    ``c_i <= 0`` take no part. Returns the summed loss.
    """
    n_neg = x.shape[1]
    k = qu.shape[1]
    zero = _F32(0.0)
    loss = 0.0
    for i in prange(x.shape[0]):
        ci = c[i]
        if ci <= zero:
            continue
        e_pos = np.exp(x_pos[i] - top[i])
        total = e_pos
        for t in range(n_neg):
            total += x[i, t]
        coef = coef0 * ci
        scale = coef / total
        for t in range(n_neg):
            x[i, t] *= scale
        loss += ci * (top[i] + np.log(total) - x_pos[i])
        dp = e_pos * scale - coef
        gm[i, k + RANK_BIAS] = dp
        g = a * dp
        for f in range(k):
            gu[i, f] += g * qm[i, f]
            gm[i, f] += g * qu[i, f]
    return loss


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def bpr_rows(movies: np.ndarray, m: np.ndarray, j: np.ndarray, w_inv_b: np.float32, reg: np.float32,
             qu: np.ndarray, qm: np.ndarray, gu: np.ndarray, gm: np.ndarray, gj: np.ndarray) -> float:
    """One-negative BPR of one batch, row by row: ``L = w softplus(-x)``, ``x = u·(m_i - m_j) + rb_i - rb_j``.

    ``dL/dx = -w s(-x) / B``; ``dx/du = m_i - m_j``, ``dx/dm_i = u``, ``dx/dm_j = -u``; the
    negative's row also takes its L2 term. Adds to ``gu``/``gm``, writes the negatives' rows ``gj``;
    returns the summed loss.
    """
    k = qu.shape[1]
    one = _F32(1.0)
    zero = _F32(0.0)
    loss = 0.0
    for i in prange(m.shape[0]):
        ji = j[i]
        x = movies[m[i], k + RANK_BIAS] - movies[ji, k + RANK_BIAS]
        for f in range(k):
            x += qu[i, f] * (qm[i, f] - movies[ji, f])
        # softplus(-x) and s(-x) without overflow for large |x|
        loss += max(-x, zero) + np.log1p(np.exp(-abs(x)))
        d = -w_inv_b / (one + np.exp(x))
        gm[i, k + RANK_BIAS] = d
        gj[i, k + RANK_BIAS] = -d
        gj[i, k + MOVIE_BIAS] = zero
        for f in range(k):
            pj = movies[ji, f]
            gu[i, f] += d * (qm[i, f] - pj)
            gm[i, f] += d * qu[i, f]
            gj[i, f] = reg * pj - d * qu[i, f]
    return loss


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def adam_rows(table: np.ndarray, m1: np.ndarray, m2: np.ndarray, grad: np.ndarray, acc: np.ndarray,
              index: np.ndarray, slot: np.ndarray, b1: np.float32, b2: np.float32, step: np.float32,
              c2: np.float32, eps: np.float32, tail_from: int, tail_limit: int, threads: int) -> None:
    """Lazy Adam on the rows of ``table`` that a batch touched: ``grad[i]`` belongs to row ``index[i]``.

    Rows are dealt to threads by row number (``row % threads``), and each thread finds its own
    rows' first occurrences in the batch with the slot table (``slot[row]``: -1, or the position
    of the row's first occurrence, where ``acc`` sums its gradients), so no pass over the batch
    is serial: finding the touched rows used to be one serial loop per table per step, the part
    that kept the step from scaling with threads. Gradients of a row are summed in batch order by
    the one thread that owns the row, so the sums do not depend on the thread count. Columns
    from ``tail_from`` on are updated only in rows whose first occurrence is one of the first
    ``tail_limit`` (the movie bias learns from positives, not from sampled negatives, whose
    gradient there is 0); a row not updated keeps its weights and moments. ``step = lr / (1 - b1^t)``,
    ``c2 = 1 - b2^t``. Leaves every slot it used at -1 again.
    """
    k = table.shape[1]
    n = index.shape[0]
    one = _F32(1.0)
    for owner in prange(threads):
        for i in range(n):
            r = index[i]
            if r % threads != owner:
                continue
            s = slot[r]
            if s < 0:
                slot[r] = i
                for f in range(k):
                    acc[i, f] = grad[i, f]
            else:
                for f in range(k):
                    acc[s, f] += grad[i, f]
        for i in range(n):
            r = index[i]
            if r % threads != owner or slot[r] != i:
                continue
            ahead = i + PREFETCH_AHEAD * threads  # about PREFETCH_AHEAD of this thread's rows ahead
            if ahead < n and index[ahead] % threads == owner:
                _prefetch_row(table, index[ahead])
                _prefetch_row(m1, index[ahead])
                _prefetch_row(m2, index[ahead])
            width = k if i < tail_limit else tail_from
            for f in range(width):
                g = acc[i, f]
                mo = b1 * m1[r, f] + (one - b1) * g
                ve = b2 * m2[r, f] + (one - b2) * g * g
                m1[r, f] = mo
                m2[r, f] = ve
                table[r, f] -= step * mo / (np.sqrt(ve / c2) + eps)
            slot[r] = -1


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(inline="always")
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a counter-based random 64-bit number (the same whatever thread draws it)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(inline="always")
def _below(seed: np.uint64, counter: np.uint64, bound: np.int64) -> np.int64:
    """A random integer in [0, bound) from (seed, counter) (64-bit modulo: the bias is < bound / 2^64)."""
    return np.int64(_mix(seed + counter * _GOLDEN) % np.uint64(bound))


#: Ratings per bucket of :func:`random_permutation`: a bucket's shuffle stays in the CPU's L2 cache.
PERMUTATION_BUCKET = 1 << 14
#: Chunks the input is cut into (fixed, not per thread, so the permutation does not depend on the threads).
PERMUTATION_CHUNKS = 256


@njit(parallel=True, error_model="numpy", cache=True)
def random_permutation(seed: np.int64, out: np.ndarray) -> None:
    """A uniformly random permutation of ``0..len(out)-1`` into ``out``, in parallel: the epoch's order.

    ``torch.randperm`` is one serial Fisher-Yates pass (at 25M ratings, a fixed cost per epoch
    that more threads do not shrink). Here every element is sent to a random bucket (a
    counter-based hash of (seed, element), so the result depends on the seed only, not on the
    thread count), the buckets are filled by chunks in parallel, and each bucket is shuffled
    by Fisher-Yates on its own. A uniform bucket per element and a uniform order within each
    bucket make the whole permutation uniform.
    """
    n = out.shape[0]
    if n == 0:
        return
    n_buckets = max(1, n // PERMUTATION_BUCKET)
    chunks = min(PERMUTATION_CHUNKS, n)
    s1 = _mix(np.uint64(seed))
    s2 = _mix(s1 + _GOLDEN)
    counts = np.zeros((chunks, n_buckets), np.int64)
    bucket = np.empty(n, np.int32)
    for c in prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            b = _below(s1, np.uint64(i), n_buckets)
            bucket[i] = b
            counts[c, b] += 1
    starts = np.empty(n_buckets + 1, np.int64)
    total = 0
    for b in range(n_buckets):  # bucket-major offsets: chunk c's part of bucket b after chunks < c
        starts[b] = total
        for c in range(chunks):
            here = counts[c, b]
            counts[c, b] = total
            total += here
    starts[n_buckets] = total
    for c in prange(chunks):
        fill = counts[c]
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            b = bucket[i]
            out[fill[b]] = i
            fill[b] += 1
    for b in prange(n_buckets):
        lo = starts[b]
        for j in range(starts[b + 1] - lo - 1, 0, -1):
            r = _below(s2, np.uint64(lo + j), j + 1)
            out[lo + j], out[lo + r] = out[lo + r], out[lo + j]


@njit(parallel=True, error_model="numpy", cache=True)
def shuffle_ratings(records: np.ndarray, perm: np.ndarray, user: np.ndarray, movie: np.ndarray,
                    rating: np.ndarray, weight: np.ndarray) -> None:
    """Write the ratings in the order ``perm`` into contiguous columns (the epoch's shuffle).

    ``records`` holds one rating per row as four int32 fields (user, movie, and the bits of the
    float32 rating and positive weight), so each random read is one cache line, not four;
    ``rating`` and ``weight`` are int32 views of the float32 columns.
    """
    for i in prange(perm.shape[0]):
        rec = records[perm[i]]
        user[i] = rec[0]
        movie[i] = rec[1]
        rating[i] = rec[2]
        weight[i] = rec[3]


@njit(parallel=True, cache=True)
def history_positions(user: np.ndarray, rated_at: np.ndarray, movie: np.ndarray, n_users: int) -> np.ndarray:
    """Each rating's position in its user's history ordered by (time, movie): 0 for the oldest.

    The same order as ``np.lexsort((movie, rated_at, user))`` (stable, so equal keys keep their
    input order), found with a counting sort by user and a small sort per user: 25M ratings
    took ~7 s with lexsort's three full-length sorts.
    """
    n = user.shape[0]
    counts = np.zeros(n_users + 1, np.int64)
    for i in range(n):
        counts[user[i] + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    by_user = np.empty(n, np.int64)
    for i in range(n):
        u = user[i]
        by_user[fill[u]] = i
        fill[u] += 1
    pos = np.empty(n, np.int64)
    for u in prange(n_users):
        rows = by_user[starts[u]:starts[u + 1]]
        by_movie = rows[np.argsort(movie[rows], kind="mergesort")]
        ordered = by_movie[np.argsort(rated_at[by_movie], kind="mergesort")]
        for k in range(ordered.shape[0]):
            pos[ordered[k]] = k
    return pos
