"""``movierec report``: the online metrics per model version, read from the database."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import typer

from movierec.settings import get_settings

from .errors import database, fail

report_app = typer.Typer(help="Reports on live traffic.", no_args_is_help=True)


def _interval(estimate: dict[str, Any], scale: float = 100.0, unit: str = " %", digits: int = 1) -> str:
    """``value [low, high]`` (percent by default); ``-`` without data, the value alone without an interval."""
    if estimate["value"] is None:
        return "-"
    value = f"{scale * estimate['value']:.{digits}f}"
    if estimate["low"] is None:
        return value + unit
    return f"{value}{unit} [{scale * estimate['low']:.{digits}f}, {scale * estimate['high']:.{digits}f}]"


def _pct(estimate: dict[str, Any]) -> str:
    return _interval(estimate)


def _mean(estimate: dict[str, Any]) -> str:
    return _interval(estimate, scale=1.0, unit="", digits=2)


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table with 95 % intervals and the comparison line."""
    k = report["k"]
    lines = [f"online metrics, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(report['since']))} to "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report['until']))} UTC, outcomes within "
             f"{report['window_s'] / 86400:g} days, 95 % intervals", ""]
    head = f"{'version':>7}  {'answers':>8}  {f'hit rate@{k}':<24}  {'mean rating':<20}  {'coverage':>8}  " \
           f"{'personalised':<24}  {'click rate':<24}"
    lines += [head, "-" * len(head)]
    for v in report["versions"]:
        coverage = f"{100 * v['coverage']:.1f} %" if v["coverage"] is not None else "-"
        lines.append(f"{v['model_version'] if v['model_version'] is not None else '-':>7}  {v['impressions']:>8}  "
                     f"{_pct(v['hit_rate']):<24}  {_mean(v['mean_rating']):<20}  {coverage:>8}  "
                     f"{_pct(v['personalized']):<24}  {_pct(v['click_rate']):<24}")
    if not report["versions"]:
        lines.append("(no recorded answers in this period)")
    comparison = report.get("comparison")
    if comparison and comparison.get("hit_rate"):
        test = comparison["hit_rate"]
        verdict = "significant" if test["significant"] else "not significant"
        lines += ["", f"hit rate, version {comparison['a']} - version {comparison['b']}: "
                      f"{100 * test['difference']:+.2f} points, z = {test['z']:.2f}, p = {test['p_value']:.3g} "
                      f"({verdict} at 5 %)"]
    return "\n".join(lines)


@report_app.command("online")
def report_online(
    days: Annotated[float, typer.Option(min=0.0, help="The last this many days.")] = 7.0,
    k: Annotated[int, typer.Option(min=1, max=100, help="Hit rate at k.")] = 10,
    compare: Annotated[Optional[str], typer.Option(help="Two versions to test, 'a,b' (default: current and "
                                                        "candidate, else the two busiest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Hit rate, mean rating, coverage and personalised share per model version, with intervals."""
    from sqlalchemy.orm import Session

    from movierec.online import Period, online_report
    from movierec.store import ModelStore

    settings = get_settings()
    pair: list[int] | None = None
    if compare is not None:
        try:
            pair = [int(part) for part in compare.split(",")]
        except ValueError:
            pair = []
        if len(pair) != 2:
            raise fail(f"--compare takes two versions as 'a,b', got {compare!r}")
    else:
        store = ModelStore(settings.model_store)
        candidate, current = store.candidate(), store.current_version()
        if candidate is not None and current is not None:
            pair = sorted([current, candidate.version])
    if days <= 0:
        raise fail("--days must be positive")
    until = int(time.time()) + 1
    since = until - int(days * 86400)
    period = Period(since, until, k=k, window_s=int(settings.hit_window_days * 86400),
                    bucket_s=max(60, (until - since) // 48))
    with database(settings.database_url) as engine, Session(engine) as session:
        report = online_report(session, period, pair).to_dict()
    typer.echo(json.dumps(report, indent=2) if as_json else render(report))
