#!/usr/bin/env python3
"""``make soak``: the reliability tests with soak-sized counts, then the table of what held.

Runs ``pytest tests/reliability`` with ``MOVIEREC_SOAK=1`` (larger numbers everywhere: hundreds of
fuzz examples per operation, tens of kills, a 60 000-request load run, longer database outages),
collects the rows each test records, and prints a Markdown table: what was tried, how many times,
what held. Failed tests are listed under the table. Exit status: pytest's.

    python scripts/soak.py                      # the soak (tens of minutes on 2 cores)
    python scripts/soak.py --ci                 # CI-sized counts (a few minutes), same table
    python scripts/soak.py --update-docs        # also rewrite the table in docs/reliability.md
    python scripts/soak.py -- -k db_outage      # pass arguments to pytest

Any single count can be set with ``MOVIEREC_REL_<NAME>=<n>`` (see tests/reliability/harness.py).
Load is generated on 127.0.0.1 only, against processes this run starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- soak-table:start -->", "<!-- soak-table:end -->"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def merge(rows: list[dict]) -> list[dict]:
    """One row per variant family: 'load X (a)' + 'load X (b)' with the same outcome -> 'load X (a, b)'."""
    merged: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        tried = row["tried"]
        base, variant = (tried[:-1].split(" (", 1) if tried.endswith(")") and " (" in tried else (tried, ""))
        key = (row["area"], base, row["held"])
        if key in merged:
            merged[key]["times"] += row["times"]
            merged[key]["variants"].append(variant)
        else:
            merged[key] = {**row, "base": base, "variants": [variant]}
    out = []
    for row in merged.values():
        variants = [v for v in row["variants"] if v]
        tried = f"{row['base']} ({', '.join(variants)})" if variants else row["base"]
        out.append({**row, "tried": tried})
    return out


def table(rows: list[dict], failures: list[tuple[str, str]], header: str) -> str:
    lines = [header, "", "| Area | What was tried | Times | What held |", "|---|---|---:|---|"]
    for row in merge(rows):
        lines.append(f"| {cell(row['area'])} | {cell(row['tried'])} | {row['times']} | {cell(row['held'])} |")
    if failures:
        lines += ["", f"**{len(failures)} test(s) failed** (each is a finding; see the test for the property):", ""]
        lines += [f"- `{name}`: {cell(message)[:300]}" for name, message in failures]
    return "\n".join(lines) + "\n"


def junit_failures(path: Path) -> tuple[list[tuple[str, str]], dict[str, int]]:
    failures, counts = [], {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not path.exists():
        return failures, counts
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
                failures.append((name, (node.get("message") or "").splitlines()[0] if node.get("message") else tag))
    return failures, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ci", action="store_true", help="CI-sized counts instead of soak-sized ones")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the table in {DOC.relative_to(ROOT)}")
    parser.add_argument("--results", type=Path, help="keep the raw JSON-lines results here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="movierec-soak-") as tmp:
        results = args.results or Path(tmp) / "results.jsonl"
        results.unlink(missing_ok=True)
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "MOVIEREC_RELIABILITY_RESULTS": str(results)}
        if not args.ci:
            env["MOVIEREC_SOAK"] = "1"
        cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-p", "no:cacheprovider", "-q", "-rfEs",
               f"--junitxml={junit}", *args.pytest_args]
        started = time.monotonic()
        print("+", " ".join(cmd), flush=True)
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        minutes = (time.monotonic() - started) / 60
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
        failures, counts = junit_failures(junit)

    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    header = (f"Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
              f"{'CI' if args.ci else 'soak'} sizes, {minutes:.1f} min on {os.cpu_count()} CPUs: "
              f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped.")
    text = table(rows, failures, header)
    print()
    print(text)
    if args.update_docs and DOC.exists():
        doc = DOC.read_text()
        if START in doc and END in doc:
            before, rest = doc.split(START, 1)
            _, after = rest.split(END, 1)
            DOC.write_text(f"{before}{START}\n{text}{END}{after}")
            print(f"updated {DOC.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
