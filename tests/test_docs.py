"""The documentation stays true to the tree: README.md is short, every "DESIGN §N" citation names a section of
docs/design.md, relative links lead to files (and headings) that exist, and docs/errors.md is the catalogue.

No Ray, no subprocess: these read files only. Each case's error line on docs/errors.md is checked against what
it prints by tests/test_catalogue.py, which runs the cases.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from catalogue_cases import CASES
from errors_page import PAGE, documented_inputs, documented_rows, page

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
README = ROOT / "README.md"
README_MAX_LINES = 250
CODE_DIRS = ("farm", "attacks", "jobs", "tests")
CODE_SUFFIXES = {".py", ".yaml", ".toml", ".md"}

# "DESIGN §6", "docs/design.md §2", "[design.md](design.md) §6", "design.md §§" never: one number each
_CITATION = re.compile(r"(?:\bDESIGN|design\.md\)?)\s*§\s*(\d+)")
_SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def markdown_pages() -> list[Path]:
    """README.md, every page under docs/, and the READMEs of the tree's folders."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("README.md"))
    return pages


def citing_files() -> list[Path]:
    """Every file that may cite the design: the code, the tests, the configs and the pages (not this file, whose
    examples cite missing sections on purpose)."""
    files = [p for d in CODE_DIRS for p in (ROOT / d).rglob("*")
             if p.suffix in CODE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts]
    return sorted({*files, *markdown_pages(), ROOT / "Makefile", ROOT / "pyproject.toml"} - {Path(__file__).resolve()})


def design_sections(text: str | None = None) -> set[int]:
    return {int(n) for n in _SECTION.findall(DESIGN.read_text() if text is None else text)}


def unresolved_citations(text: str, sections: set[int]) -> list[str]:
    """The citations in `text` whose section number is not a heading of the design."""
    return [m[0] for m in _CITATION.finditer(text) if int(m[1]) not in sections]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (a `#` line inside a fenced code block is no heading)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def broken_links(page: Path) -> list[str]:
    """Relative links of `page` to a file that does not exist, or to a heading its target lacks."""
    broken = []
    for target in _LINK.findall(page.read_text()):
        if _EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_design_has_sections_1_to_10():
    assert design_sections() == set(range(1, 11))


def test_every_design_citation_resolves_to_a_section():
    sections = design_sections()
    unresolved = {str(f.relative_to(ROOT)): bad for f in citing_files()
                  if (bad := unresolved_citations(f.read_text(errors="replace"), sections))}
    assert not unresolved, unresolved
    cited = sum(len(_CITATION.findall(f.read_text(errors="replace"))) for f in citing_files())
    assert cited >= 20  # the code's citations are found at all


@pytest.mark.parametrize("text,bad", [("DESIGN §6 and DESIGN §2", []), ("see DESIGN §11", ["DESIGN §11"]),
                                      ("docs/design.md §12", ["design.md §12"]),
                                      ("[design.md](design.md) §0", ["design.md) §0"])])
def test_a_citation_of_a_missing_section_is_found(text, bad):
    assert unresolved_citations(text, set(range(1, 11))) == bad


def test_no_reference_to_the_shared_notes_outside_the_repository():
    stray = [str(f.relative_to(ROOT)) for f in citing_files()
             if re.search(r"\.\./shared/(?!data/)|shared/DESIGN", f.read_text(errors="replace"))]
    assert not stray, f"cite docs/design.md instead: {stray}"


def test_relative_links_point_at_existing_files_and_headings():
    broken = {str(p.relative_to(ROOT)): bad for p in markdown_pages() if (bad := broken_links(p))}
    assert not broken, broken


def test_a_broken_link_is_found(tmp_path):
    page_md = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading (with `code`)\n```bash\n# nope\n```\n")
    page_md.write_text("[ok](there.md#a-heading-with-code) [gone](missing.md) [bad](there.md#nope) "
                       "[web](https://example.com/x.md)\n")
    assert [b.split(":")[0] for b in broken_links(page_md)] == ["missing.md", "there.md#nope"]


def test_errors_page_lists_the_catalogue_in_order():
    text = PAGE.read_text()
    assert documented_inputs(text) == [(c.id, c.input) for c in CASES], "regenerate it: tests/errors_page.py"
    assert text == page(list(documented_rows(text).values())), "docs/errors.md's header or layout was edited"
