"""The quality gate: do not replace the serving model with a worse one.

Design (and why). The published model is refit on *all* ratings, so scoring the current model on
this run's held-out ratings would be dishonest: it has most likely been trained on them and would
look better than any candidate. Instead the gate compares like with like: **held-out metrics of the
training procedure**, which every run records in its manifest (``metrics``) together with the
exact evaluation protocol (``evaluation``: split seed and fractions, K, relevance threshold).

* The candidate's metrics come from this run's evaluation fits (random 10 % held out for RMSE,
  per-user latest 20 % for NDCG@10), which never saw their test ratings.
* The current model's metrics are read from its manifest: they were measured the same way, on the
  data it was trained on.
* When the data snapshot (row count and newest ``rated_at``) is the same, the held-out ratings are
  identical (the split seed is a protocol constant), so this is an exact comparison on the same
  held-out ratings. When the data has changed, both are still unbiased held-out estimates on the
  same protocol, on overlapping test sets; the gate says so in its note.
* If the protocols differ (or the current manifest has no metrics, or there is no current model)
  there is nothing comparable and the candidate passes, with a note saying why.

Refuse when ``rmse_cand > rmse_cur * (1 + tolerance)`` or ``ndcg_cand < ndcg_cur * (1 - tolerance)``
(relative tolerance, default 3 %: run-to-run noise of NDCG@10 on ML-100K across seeds is about
1-2 % relative). ``--force`` publishes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 0.03
#: (metric, True if higher is better)
GATED_METRICS = (("rmse", False), ("ndcg@10", True))


@dataclass
class GateDecision:
    """Whether the candidate may be published, and why."""

    passed: bool
    reason: str
    compared: dict[str, dict[str, float]] = field(default_factory=dict)
    same_data: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "compared": self.compared, "same_data": self.same_data}


def check(candidate: dict[str, Any], current: dict[str, Any] | None, tolerance: float = DEFAULT_TOLERANCE) -> GateDecision:
    """Compare a candidate manifest (``metrics``, ``evaluation``, ``data``) with the current model's manifest."""
    if current is None:
        return GateDecision(True, "no current model: nothing to compare with")
    cur_metrics = current.get("metrics") or {}
    if current.get("evaluation") != candidate.get("evaluation"):
        return GateDecision(True, f"current model (version {current.get('version')}) was evaluated with a different "
                                  "protocol; its metrics are not comparable")
    same_data = current.get("data") == candidate.get("data")
    compared: dict[str, dict[str, float]] = {}
    worse: list[str] = []
    for name, higher_is_better in GATED_METRICS:
        cur, cand = cur_metrics.get(name), candidate["metrics"].get(name)
        if cur is None or cand is None:
            continue
        compared[name] = {"candidate": float(cand), "current": float(cur)}
        if higher_is_better and cand < cur * (1 - tolerance):
            worse.append(f"{name} {cand:.4f} < {cur:.4f} - {tolerance:.0%}")
        elif not higher_is_better and cand > cur * (1 + tolerance):
            worse.append(f"{name} {cand:.4f} > {cur:.4f} + {tolerance:.0%}")
    where = "on the same held-out ratings" if same_data else "on the same protocol (data changed since)"
    version = current.get("version")
    if not compared:
        return GateDecision(True, f"current model (version {version}) records no comparable metrics", compared, same_data)
    if worse:
        return GateDecision(False, f"candidate is worse than the current model (version {version}) {where}: "
                                   + "; ".join(worse), compared, same_data)
    return GateDecision(True, f"candidate is within {tolerance:.0%} of the current model (version {version}) {where}",
                        compared, same_data)
