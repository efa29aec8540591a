"""``make bench``: every part in sequence, each in its own process, then the plots and the report.

usage: python -m bench.run_all [--quick] [--parts accuracy speed serving ann] [--skip-postgres]

Prints each part's table as it finishes, then writes ``bench/results/summary.md`` (all tables, with
each part's wall-clock time) and copies it between the markers
``<!-- bench:results:start -->`` / ``<!-- bench:results:end -->`` of ``docs/benchmarks.md``, so the
figures there are the ones this run printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
PARTS = ("accuracy", "speed", "serving", "ann")
DOC = C.ROOT / "docs" / "benchmarks.md"


def splice(path: Path, block: str) -> bool:
    """Replace the text between the markers in ``path``; False when the file or the markers are absent."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block.strip()}\n{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke check: every part with --quick")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=None, help="passed to the accuracy and speed parts")
    args = ap.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    env = {**os.environ, "PYTHONPATH": str(C.ROOT)}
    times: dict[str, float] = {}
    failed = []
    t_all = time.perf_counter()
    for part in args.parts:
        cmd = [sys.executable, "-m", f"bench.{part}"] + (["--quick"] if args.quick else [])
        if part == "serving" and args.skip_postgres:
            cmd.append("--skip-postgres")
        if part in ("accuracy", "speed") and args.torch_threads is not None:
            cmd += ["--torch-threads", str(args.torch_threads)]
        print(f"\n=== {' '.join(cmd[1:])} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=C.ROOT, env=env)
        times[part] = time.perf_counter() - t0
        print(f"=== {part}: exit {rc}, {times[part]:.0f} s ===", flush=True)
        if rc:
            failed.append(part)
    subprocess.call([sys.executable, "-m", "bench.plots"] + (["--quick"] if args.quick else []), cwd=C.ROOT, env=env)
    total = time.perf_counter() - t_all
    sections = [f"Produced by `python -m bench.run_all{' --quick' if args.quick else ''}` "
                f"(`make bench{'-quick' if args.quick else ''}`): " + ", ".join(f"{p} {s:.0f} s" for p, s in times.items())
                + f"; total {total:.0f} s (load average at the end {os.getloadavg()[0]:.1f})."]
    earlier = [p for p in PARTS if p not in times and (C.RESULTS / f"{p}{suffix}.md").is_file()]
    if earlier:  # a run of some parts keeps the others' latest results, each with its own environment line
        sections[0] += (" Not rerun this time, shown from their latest run (see each part's environment line): "
                        + ", ".join(earlier) + ".")
    for part in PARTS:
        md = C.RESULTS / f"{part}{suffix}.md"
        png = C.RESULTS / f"{part}{suffix}.png"
        if md.is_file():
            body = md.read_text(encoding="utf-8").replace("\n# ", "\n### ").replace("\n## ", "\n#### ")
            body = body.replace("# ", "### ", 1) if body.startswith("# ") else body
            if png.is_file():
                body += f"\n\n![{part}](../bench/results/{png.name})"
            sections.append(body)
    summary = "\n\n".join(sections)
    C.write_result(f"summary{suffix}.md", "# Benchmark results\n\n" + summary)
    if not args.quick:
        if splice(DOC, summary):  # its images are linked as ../bench/results/, relative to docs/
            print(f"updated the results block of {DOC.relative_to(C.ROOT)}")
        else:
            print(f"warning: {DOC.relative_to(C.ROOT)} has no {START} ... {END} block; not updated")
    print(f"\nwrote bench/results/summary{suffix}.md; total {total:.0f} s" + (f"; FAILED: {failed}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
