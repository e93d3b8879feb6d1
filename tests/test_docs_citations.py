"""Every citation of the reference pages in the code has a target under docs/.

A citation names a page by its repository path (``docs/model.md``, ``docs/metrics.md``,
``docs/data_formats.md``), a section with ``§`` (``§4a``, ``§3.2``, ranges ``§4.2–4.3``) and/or an
identifier (``P<n>`` rows of the pitfall table of data_formats.md, ``Q<n>`` rows of the quirk table of
model.md). A ``§`` without a page on its line refers to the page named last before it in the same file
(or, when none is, the first one after it). The output file ``metrics.md`` that ``cleanpose evaluate``
writes is not a citation. Cross-references between the pages (``[page.md](page.md) §N``) are checked too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("model.md", "metrics.md", "data_formats.md")
SCANNED = [("src", "*.py"), ("tests", "*.py"), ("benchmarks", "*.py"), ("configs", "*.yaml")]
IDENTIFIER_PAGE = {"P": "data_formats.md", "Q": "model.md"}

SECTION_ID = r"\d+[a-z]?(?:\.\d+)?"
PAGE_NAME = re.compile(r"(?<![\w/.-])(docs/)?(model|metrics|data_formats)\.md\b")
SECTION = re.compile(rf"§\s?({SECTION_ID})(?:\s?[–-]\s?§?({SECTION_ID}))?")
IDENTIFIER = re.compile(r"\b([PQ])(\d+)\b")
OUTPUT_FILE = re.compile(r"metrics\.csv, metrics\.md|[\"']metrics\.md[\"']")
HEADING = re.compile(rf"^#{{2,4}} ({SECTION_ID})\.?\s")
TABLE_ROW_ID = re.compile(r"^\| ([PQ]\d+) \|")
CROSS_REFERENCE = re.compile(rf"\[(\w+\.md)\]\(\1\) §({SECTION_ID})")


def _targets(page: str) -> set[str]:
    """Section numbers (from headings) and table identifiers of a docs page."""
    targets = set()
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        for pattern in (HEADING, TABLE_ROW_ID):
            match = pattern.match(line)
            if match:
                targets.add(match.group(1))
    return targets


def _scanned_files() -> list[Path]:
    files = [path for folder, glob in SCANNED for path in sorted((ROOT / folder).rglob(glob))]
    return [path for path in files if path != Path(__file__).resolve()]


def _citations(text: str) -> tuple[list[tuple[int, str, str]], list[int]]:
    """(line, page, target) of every cited section or identifier, and the lines naming a page without docs/."""
    blanked = OUTPUT_FILE.sub(lambda match: " " * len(match.group()), text)
    mentions = [(match.start(), match.group(2) + ".md", bool(match.group(1))) for match in PAGE_NAME.finditer(blanked)]
    undocked = [blanked.count("\n", 0, offset) + 1 for offset, _, docked in mentions if not docked]
    cited = []
    for match in SECTION.finditer(blanked):
        before = [page for offset, page, _ in mentions if offset < match.start()]
        after = [page for offset, page, _ in mentions if offset > match.start()]
        page = before[-1] if before else after[0] if after else "<no page named in the file>"
        line = blanked.count("\n", 0, match.start()) + 1
        cited += [(line, page, section) for section in match.groups() if section]
    for match in IDENTIFIER.finditer(blanked):
        cited.append(
            (
                blanked.count("\n", 0, match.start()) + 1,
                IDENTIFIER_PAGE[match.group(1)],
                match.group(1) + match.group(2),
            )
        )
    return cited, undocked


def test_every_page_exists_and_has_sections():
    for page in PAGES:
        assert len(_targets(page)) > 10, page
    assert (DOCS / "README.md").is_file()


def test_pages_number_their_sections_like_the_citations_expect():
    # A few fixed points: sub-lettered sections, decimal sections, both identifier tables.
    assert {"4a", "4b", "16a", "16b", "16c", "Q1", "Q15"} <= _targets("model.md")
    assert {"1.1", "6.3", "14"} <= _targets("metrics.md")
    assert {"3.3", "5.6", "P1", "P23"} <= _targets("data_formats.md")


def test_every_citation_in_the_code_resolves():
    targets = {page: _targets(page) for page in PAGES}
    unresolved, undocked = [], []
    for path in _scanned_files():
        cited, bare = _citations(path.read_text(encoding="utf-8"))
        name = path.relative_to(ROOT)
        undocked += [f"{name}:{line}" for line in bare]
        unresolved += [
            f"{name}:{line}: {page} {target}" for line, page, target in cited if target not in targets.get(page, set())
        ]
    assert not undocked, "cite the pages by their path under docs/ (docs/model.md, ...): " + ", ".join(undocked)
    assert not unresolved, "citations without a target in docs/:\n" + "\n".join(unresolved)


@pytest.mark.parametrize("page", PAGES)
def test_cross_references_between_pages_resolve(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    missing = [
        f"{other} §{section}" for other, section in CROSS_REFERENCE.findall(text) if section not in _targets(other)
    ]
    assert not missing, f"docs/{page} cites missing sections: {missing}"
