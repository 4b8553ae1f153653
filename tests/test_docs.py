"""The README and docs/: every relative link resolves, every page is reachable from the README, and the main and
test commands are where .ci/run and users look for them."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        yield target.split("#", 1)[0]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_inside_the_repository(page):
    for target in relative_links(page):
        path = (page.parent / target).resolve()
        assert path.is_relative_to(REPO), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.relative_to(REPO)}: broken link {target}"


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {(page.parent / t).resolve() for page in PAGES for t in relative_links(page)}
    docs = [p for p in PAGES if p.name != "README.md" or p.parent != REPO]
    for page in docs:
        assert page.resolve() in linked or page.parent.resolve() in linked, f"{page.relative_to(REPO)} is linked nowhere"


def test_the_readme_is_a_landing_page_with_both_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        block = readme[readme.index(marker):]
        assert block.split("\n", 1)[1].startswith("```bash\n"), marker


def test_docs_name_the_modules_they_describe():
    """Backticked modules, scripts and folders in docs (`frozen_dt/...py`, `baselines/`, `tests/...py`) exist (data
    files and results/ may be outputs of commands, so those are not checked)."""
    pattern = re.compile(r"`((?:frozen_dt|baselines|envs|eval|tests|bench)/[\w./-]*(?:\.py|\.sh|/))`")
    for page in PAGES:
        for name in pattern.findall(page.read_text()):
            if "<" in name or "*" in name:
                continue
            candidates = [REPO / name, REPO / "frozen_dt" / name]
            assert any(c.exists() for c in candidates), f"{page.relative_to(REPO)} names {name}, which does not exist"


def test_readme_algorithm_table_is_the_registry():
    """The README's table is `frozen-dt algorithms --markdown`: an algorithm added, renamed or re-described in its
    spec without the README following (or the other way round) fails here."""
    from frozen_dt.algorithms import ALGORITHMS, algorithm_table

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- algorithms: frozen-dt algorithms --markdown -->\n")
    block = readme[readme.index("\n", start) + 1: readme.index("<!-- /algorithms -->")]
    assert block == algorithm_table(), "regenerate the README's table with 'frozen-dt algorithms --markdown'"
    assert len(block.strip().splitlines()) == 2 + len(ALGORITHMS)
    for name in ALGORITHMS:
        assert (REPO / "docs" / "algorithms" / f"{name}.md").is_file(), f"{name} has no docs page"
