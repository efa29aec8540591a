"""The documentation: a short README, the rest in docs/, links that lead somewhere, and generated
blocks where their generators write them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "```sh\nmake run\n```" in readme and "```sh\nmake test\n```" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_bench_results_block_is_where_make_bench_writes_it() -> None:
    from bench import run_all

    assert run_all.DOC == REPO / "docs" / "benchmarks.md"
    text = run_all.DOC.read_text(encoding="utf-8")
    assert text.count(run_all.START) == 1 and text.count(run_all.END) == 1
    assert run_all.START not in (REPO / "README.md").read_text(encoding="utf-8")


def test_soak_table_is_where_soak_update_docs_writes_it() -> None:
    shown = subprocess.run([sys.executable, str(REPO / "scripts" / "soak.py"), "--help"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "rewrite the table in docs/reliability.md" in " ".join(shown.split())
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert text.count("<!-- soak-table:start -->") == 1 and text.count("<!-- soak-table:end -->") == 1
