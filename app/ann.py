"""Top-n with the approximate index, and filters honoured exactly.

:class:`AnnRanker` answers the two ranking questions of :class:`app.scoring.LoadedModel`
(``top_for_user`` and ``similar``, same arguments, same results' meaning) from the faiss indexes
of :mod:`movierec.ann_index`; :mod:`app.recommendation` asks ``state.ranker`` instead of the
model and never knows which one it got. What it guarantees whatever the index does:

* only ``allowed`` rows are returned (exclusions, genre and year filters): the index is searched
  with the allowed rows as a bitmap selector, so a filtered-out movie is never even a candidate;
* ``min(n, allowed rows)`` rows, never fewer: when the probed lists hold too few allowed movies
  the search is widened (4x the probes, up to all of them), and a very selective filter is
  answered by exact scoring of the allowed rows alone, which is cheaper than probing then;
* the scores returned are the exact ranking scores of the rows returned (recomputed), best first.

What may differ from exact scoring is which rows make the top n (recall@10, measured in
bench/ann.py).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import faiss
import numpy as np

from movierec import ann_index
from movierec.ann_index import AnnIndex, AnnIndexes, mips_queries
from movierec.model_format import ModelArtifact

from .scoring import LoadedModel, UserVector

log = logging.getLogger(__name__)

#: Exact scoring of the allowed rows gathers each of them; the index scans the probed lists. One
#: gathered row costs about as much as this many scanned ones: at 1M movies, k=64, gathering and
#: scoring 50,000 scattered rows took 38 ms, faiss scanning all 1M (2,000 lists, with the bitmap)
#: 27 ms (best of 15, one thread, load average 9): ~0.75 us against ~0.027 us a row.
EXACT_ROW_COST = 30.0
#: From this share of the lists probed on, a request is scored exactly over the whole catalogue (one
#: contiguous matvec, which streams the rows faster than the index scans its lists) instead of through
#: the index. Trained factors cluster and their tuned probe is a few percent of the lists (1M movies:
#: 64 of 2,000); factors without structure do not, and at 60,000 movies of i.i.d. factors the index
#: needed 384 of 490 lists for its recall, which made /recommend slower than exact scoring
#: (0.06 against 0.09-0.10 x the bare endpoint, docs/benchmarks.md).
FULL_SCAN_SHARE = 0.5
#: Candidates the coarse pass (:class:`CoarseScan`) hands to exact rescoring when nothing is filtered
#: out; a filter that allows a fraction f of the catalogue asks for this many / f. On 60,000 movies of
#: i.i.d. factors (k = 64), recall@10 of the rescored top 10 against exact scoring was 0.946 / 0.980 /
#: 0.996 with 100 / 200 / 400 candidates.
COARSE_CANDIDATES = 200


class AnnRanker:
    """``top_for_user`` and ``similar`` of one model version through its ANN indexes."""

    def __init__(self, model: LoadedModel, indexes: AnnIndexes, exact_row_cost: float = EXACT_ROW_COST,
                 coarse: CoarseScan | None = None) -> None:
        self.model = model
        self.indexes = indexes
        #: The coarse pass that stands in for the full scan of ``top_for_user`` (None: exact full scan).
        self.coarse = coarse
        self.m = len(model.movie_ids)
        #: See EXACT_ROW_COST; tests pass infinity to take the index path whatever the filter and probe
        #: count (FULL_SCAN_SHARE applies only with a finite cost).
        self.exact_row_cost = exact_row_cost

    # -- the LoadedModel interface -----------------------------------------------------------------

    def top_for_user(self, user: UserVector, n: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` allowed rows ranked best for ``user``, best first, with their ranking scores."""
        index = self.indexes.recommend
        if index is None:  # an nn model: no inner-product index, exact scoring
            return self.model.top_for_user(user, n, allowed)
        model = self.model
        query = mips_queries(user.vec)

        def exact(rows: np.ndarray) -> np.ndarray:
            return model.movie_factors[rows] @ user.vec + model.rank_term[rows]

        def full_scan() -> tuple[np.ndarray, np.ndarray]:
            if self.coarse is not None:
                found = self.coarse.top(user.vec, n, allowed, exact)
                if found is not None:
                    return found
            return model.top_for_user(user, n, allowed)

        return self._top(index, query, n, allowed, exact, full_scan)

    def similar(self, row: int, n: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` allowed rows closest to ``row`` by cosine (itself excluded; ``allowed`` is modified)."""
        allowed[row] = False
        # Cosine from the mapped factors and their norms (no private normalised copy of the catalogue).
        factors, norm = self.model.movie_factors, np.maximum(self.model.movie_norm, 1e-12)
        query = (factors[row] / norm[row])[None, :]

        def exact(rows: np.ndarray) -> np.ndarray:
            return (factors[rows] @ query[0]) / norm[rows]

        return self._top(self.indexes.similar, query, n, allowed, exact,
                         lambda: self.model.similar(row, n, allowed))

    # -- the search ----------------------------------------------------------------------------

    def _top(self, index: AnnIndex, query: np.ndarray, n: int, allowed: np.ndarray,
             exact: Any, full_scan: Any) -> tuple[np.ndarray, np.ndarray]:
        # One OpenMP thread per search: a request is one query, and the server's threads are the
        # parallelism. The setting is per thread (an OpenMP ICV), so it is made in the thread that
        # searches: left at the default, every request thread forked a team of spinning OpenMP
        # workers, and /recommend through the index was 5x slower than exact scoring on 2 busy cores.
        faiss.omp_set_num_threads(1)
        count = int(np.count_nonzero(allowed))
        want = min(n, count)
        if want <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        fraction = count / self.m
        # Probe more lists when fewer rows are allowed: the allowed rows near the query are fewer.
        # By 1/sqrt(fraction): at 1M movies, random filters of 1-30 % kept recall@10 at 0.993-1.000
        # with it (1.000 with 1/fraction, at 2-8x the time; 0.970-0.980 without widening).
        nprobe = min(index.nlist, math.ceil(index.nprobe / math.sqrt(fraction)))
        if count * self.exact_row_cost <= nprobe * self.m / index.nlist:
            return _best(np.flatnonzero(allowed), exact, want)
        if nprobe >= FULL_SCAN_SHARE * index.nlist and math.isfinite(self.exact_row_cost):
            return full_scan()
        bitmap = np.packbits(allowed, bitorder="little")  # faiss's IDSelectorBitmap: bit i&7 of byte i>>3
        selector = faiss.IDSelectorBitmap(self.m, faiss.swig_ptr(bitmap))
        while True:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            _, found = index.index.search(query, want, params=params)
            rows = found[0]
            rows = rows[rows >= 0]
            if rows.size >= want:
                return _best(rows.astype(np.intp), exact, want)
            if nprobe >= index.nlist:  # every list probed and still short: cannot happen, but never return fewer
                log.warning("ANN %s search found %d of %d allowed rows; scoring exactly", index.name, rows.size, want)
                return _best(np.flatnonzero(allowed), exact, want)
            nprobe = min(index.nlist, nprobe * 4)


class CoarseScan:
    """A 4-bit product-quantized copy of the ranking vectors ``[factors, rank_term]`` (faiss fast-scan),
    for models whose factors defeat the inverted lists.

    Such factors (no clusters: i.i.d. random, say) make the index probe most of its lists, and the
    fallback, an exact scan, reads every row of float32 factors (15 MB a request at 60,000 movies,
    k = 64). The quantized copy is 33 bytes a movie and scanned with SIMD lookups in a fraction of
    that time; its best :data:`COARSE_CANDIDATES` are rescored exactly, so scores stay exact and
    only which movies make the top n may differ, as with the index. faiss's fast-scan takes no
    selector: filtered movies are dropped from the candidates afterwards, and when fewer than
    ``n`` allowed ones remain the caller scores exactly. Built at load, in about a second per
    100,000 movies; nothing is stored.
    """

    def __init__(self, factors: np.ndarray, rank_term: np.ndarray, seed: int = 0) -> None:
        m, k = factors.shape
        self.dims = k + 1 + (k + 1) % 2  # [factors, rank term], padded to an even width: 2 dims a sub-quantizer
        vectors = np.zeros((m, self.dims), dtype=np.float32)
        vectors[:, :k], vectors[:, k] = factors, rank_term
        self.index = faiss.IndexPQFastScan(self.dims, self.dims // 2, 4, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(m, size=min(m, 20_000), replace=False)
        self.index.train(vectors[np.sort(sample)])
        self.index.add(vectors)
        self.m, self.k = m, k

    def top(self, user_vec: np.ndarray, n: int, allowed: np.ndarray,
            exact: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``n`` allowed rows best for ``user_vec`` among the coarse pass's candidates, rescored
        exactly; None when the candidates hold fewer than ``min(n, allowed rows)`` allowed rows."""
        count = int(np.count_nonzero(allowed))
        want = min(n, count)
        if want <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        asked = min(self.m, math.ceil(max(COARSE_CANDIDATES, 4 * want) * self.m / count))
        query = np.zeros((1, self.dims), dtype=np.float32)
        query[0, :self.k], query[0, self.k] = user_vec, 1.0
        _, found = self.index.search(query, asked)
        rows = found[0]
        rows = rows[rows >= 0].astype(np.intp)
        rows = rows[allowed[rows]]
        if rows.size < want:
            return None
        return _best(rows, exact, want)


def _best(rows: np.ndarray, exact: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``rows`` by their exact scores, best first (ties: the lower row first)."""
    scores = np.asarray(exact(rows), dtype=np.float32)
    if rows.size > n:
        part = np.argpartition(-scores, n - 1)[:n]
        rows, scores = rows[part], scores[part]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def ranker_for(artifact: ModelArtifact, model: LoadedModel, min_movies: int | None) -> AnnRanker | None:
    """The ANN ranker of a version being loaded, or None when its catalogue is scored exactly.

    Below ``min_movies`` movies (or with None): exact scoring. Otherwise the indexes stored with
    the version are verified and used (:class:`~movierec.model_format.CorruptModelError` when
    they do not match it: the version is refused like a corrupt model), or built now when the
    version has none (published before its catalogue was large, or by a publisher that skipped them).
    """
    if min_movies is None or len(model.movie_ids) < min_movies:
        return None
    if ann_index.present(artifact.path):
        indexes = ann_index.load(artifact.path, artifact.manifest, artifact.version)
        log.info("version %s: ANN indexes verified (%s)", artifact.version, _describe(indexes))
    else:
        started = time.perf_counter()
        indexes = ann_index.build(model.movie_factors, model.rank_term if model.kind == "dot" else None,
                                  model.user_factors)
        log.info("version %s has no stored ANN index: built one in %.1f s (%s)", artifact.version,
                 time.perf_counter() - started, _describe(indexes))
    coarse = None
    rec = indexes.recommend
    if rec is not None and model.kind == "dot" and rec.nprobe >= FULL_SCAN_SHARE * rec.nlist:
        started = time.perf_counter()
        coarse = CoarseScan(model.movie_factors, model.rank_term)
        log.info("version %s: its index must probe %d of %d lists, so /recommend scans a quantized copy "
                 "instead (built in %.1f s)", artifact.version, rec.nprobe, rec.nlist, time.perf_counter() - started)
    return AnnRanker(model, indexes, coarse=coarse)


def _describe(indexes: AnnIndexes) -> str:
    return ", ".join(f"{e.name}: nlist {e.nlist}, nprobe {e.nprobe}, sample recall@10 {e.recall_at_10:.3f}"
                     for e in (indexes.recommend, indexes.similar) if e is not None)
