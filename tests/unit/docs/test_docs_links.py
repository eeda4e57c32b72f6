"""README.md and docs/*.md point only at things that exist.

For every page: each relative link `[x](path)` or `[x](path#anchor)` names an existing file (relative to the page's
folder) and, with an anchor, a heading of that file whose GitHub slug is the anchor; each repository path named in
backticks (`party_a/run.py`, `protocol/layer/`, `tests/test_x.py::test_y`, `bench/psi.py:11`) exists. The README
stays short, and docs/design.md's "How the code is laid out" names every top-level package and every sub-package of
`protocol/`, and nothing that is not there.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README_MAX_LINES = 250
TOP_FOLDERS = ("party_a", "party_b", "psi", "coordinator", "protocol", "audit", "bench", "scenarios", "tests",
               "docs")
TOP_FILES = ("pyproject.toml", "Makefile", "README.md")
# paths inside a role's work directory that the pages name relative to it: they start like a repository folder
# (psi/) but are written by a run, not kept in the repository
WORKDIR_PATHS = {"psi/aligned_rows.csv", "psi/summary.json", "psi/shared.parquet", "psi/state/"}
LAYOUT_HEADING = "How the code is laid out"

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(([^()\s]+)\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# a folder (ending in /) or a file (its last part has an extension): `psi/open` is a message tag, not a path
PATH = re.compile(rf"^(?:(?:{'|'.join(TOP_FOLDERS)})/(?:[\w.-]+/)*(?:[\w-]+\.\w+)?|"
                  rf"{'|'.join(re.escape(f) for f in TOP_FILES)})$")


@dataclass(frozen=True)
class Problem:
    doc: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.what}"


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[*_]{1,3}([^*_]+)[*_]{1,3}", r"\1", text)
    kept = [c for c in text.lower()
            if c in " -_" or unicodedata.category(c)[0] in "LNM" or unicodedata.category(c) == "Pc"]
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a page, the second of a name with -1 appended, as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def repository_path(span: str) -> str | None:
    """The repository path a code span names, without a `:line`, `::test` or `(...)` suffix; None when the span
    is not a path in the repository (a command, a placeholder, a glob, another host's path)."""
    token = span.strip()
    token = re.sub(r"\(.*\)$", "", token)  # a call: `steps.run(...)`
    token = re.sub(r"::.*$", "", token)  # a test: `tests/test_x.py::test_y`
    token = re.sub(r":[\d,-]+$", "", token)  # a line: `party_a/serving/http.py:3`
    if any(c in token for c in "*?[]{}<>$ …") or not PATH.match(token):
        return None
    return token


def check(root: Path = ROOT, docs: list[Path] | None = None) -> list[Problem]:
    problems = []
    for page in docs if docs is not None else pages(root):
        name = page.relative_to(root).as_posix()
        for number, line in prose(page.read_text(encoding="utf-8")):
            spans = [m.group(2) for m in CODE_SPAN.finditer(line)]
            outside = CODE_SPAN.sub("", line)
            for target in LINK.findall(outside):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                file, _, anchor = target.partition("#")
                dest = (page.parent / file).resolve() if file else page
                if not dest.exists():
                    problems.append(Problem(name, number, f"link to {target}: no file {file}"))
                    continue
                if anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(Problem(name, number, f"link to {target}: no heading #{anchor} in {file or name}"))
            for span in spans:
                path = repository_path(span)
                if path is None or path in WORKDIR_PATHS:
                    continue
                if not (root / path).exists() or (path.endswith("/") and not (root / path).is_dir()):
                    problems.append(Problem(name, number, f"`{span}` names {path}, which is not in the repository"))
    return problems


def layout_block(design: Path) -> tuple[int, list[str]]:
    """The first line number and the lines of the code block under "How the code is laid out"."""
    lines = design.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip("# ") == LAYOUT_HEADING)
    opening = next(i for i in range(start, len(lines)) if FENCE.match(lines[i]))
    closing = next(i for i in range(opening + 1, len(lines)) if FENCE.match(lines[i]))
    return opening + 2, lines[opening + 1:closing]


def check_layout(root: Path = ROOT) -> list[Problem]:
    """Every folder the layout names exists, and so does every file it names in that folder's line; every top-level
    package (and docs/) and every sub-package of protocol/ is named."""
    design = root / "docs" / "design.md"
    first, block = layout_block(design)
    problems, named, parent = [], set(), None
    for number, line in enumerate(block, first):
        match = re.match(r"^( {0,2})(\S+/)\s", line + " ")
        if match:
            indent, folder = match.groups()
            path = folder if not indent else f"{parent}{folder}"
            if not indent:
                parent = folder
            named.add(path.rstrip("/"))
            if not (root / path).is_dir():
                problems.append(Problem("docs/design.md", number, f"the layout names {path}, which is not a folder"))
                continue
            current = root / path
        for file in re.findall(r"\b[\w/]+\.(?:py|json|toml)\b", line):
            if not (current / file).exists():
                problems.append(Problem("docs/design.md", number,
                                        f"the layout names {file} in {current.relative_to(root)}/, not there"))
    packages = {p.parent.relative_to(root).as_posix() for p in root.glob("*/__init__.py")} | {"docs"}
    packages |= {p.parent.relative_to(root).as_posix() for p in (root / "protocol").glob("*/__init__.py")}
    for missing in sorted(packages - named):
        problems.append(Problem("docs/design.md", first, f"the layout does not name {missing}/"))
    return problems


# ---- the checker catches what it should -----------------------------------------------------------------------------

def test_the_checker_reports_a_broken_link_a_missing_anchor_and_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "party_a" / "serving").mkdir(parents=True)
    (tmp_path / "party_a" / "serving" / "http.py").write_text("")
    (tmp_path / "docs" / "serving.md").write_text("# Serving\n\n## Endpoints: `GET` one user\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# A page\n"
        "\n"
        "Good: [serving](serving.md), [its endpoints](serving.md#endpoints-get-one-user),\n"
        "`party_a/serving/http.py:3`, `python -m party_a serve`, `<workdir>/models/`, `psi/aligned_rows.csv`,\n"
        "[home](https://example.com). Broken: [gone](gone.md) and [no heading](serving.md#errors).\n"
        "```\n"
        "[inside a fence](nowhere.md) `party_a/nowhere.py`\n"
        "```\n"
        "Missing: `party_a/serving_http.py` and `tests/test_gone.py::test_x`; a tag: `psi/open`.\n")
    problems = [str(p) for p in check(tmp_path, [page])]
    assert problems == [
        "docs/page.md:5: link to gone.md: no file gone.md",
        "docs/page.md:5: link to serving.md#errors: no heading #errors in serving.md",
        "docs/page.md:9: `party_a/serving_http.py` names party_a/serving_http.py, which is not in the repository",
        "docs/page.md:9: `tests/test_gone.py::test_x` names tests/test_gone.py, which is not in the repository",
    ]


@pytest.mark.parametrize("heading, anchor", [
    ("Tables in PostgreSQL", "tables-in-postgresql"),
    ("10. Compute backends: local processes or each organisation's Ray cluster",
     "10-compute-backends-local-processes-or-each-organisations-ray-cluster"),
    ("What `make demo` shows", "what-make-demo-shows"),
    ("Story 1: shop and bank (2,000 shop users, 1,200 shared; 300 items)",
     "story-1-shop-and-bank-2000-shop-users-1200-shared-300-items"),
    ("What the received values still reveal, measured", "what-the-received-values-still-reveal-measured"),
])
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


# ---- the pages ------------------------------------------------------------------------------------------------------

def test_every_link_and_named_path_exists() -> None:
    problems = check()
    assert not problems, "pages point at what is not there:\n" + "\n".join(map(str, problems))


def test_the_layout_matches_the_tree() -> None:
    problems = check_layout()
    assert not problems, "docs/design.md's layout and the tree differ:\n" + "\n".join(map(str, problems))


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}: move text to docs/"
