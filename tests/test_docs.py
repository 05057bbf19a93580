"""The documentation: the README's contents reach every page, the README stays short, the
links of the README and CONTRIBUTING.md resolve, and the MkDocs site builds with
``--strict`` (a broken link or anchor, or a page missing from nav, fails it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"

# [text](target) or [text](target#anchor); a target is a path or a URL.
LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")


def contents_section(readme: str) -> str:
    """The README's ``## Contents`` section, up to the next ``## `` heading."""
    match = re.search(r"^## Contents\n(.*?)(?=^## )", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Contents' section"
    return match.group(1)


def heading_anchors(page: Path) -> set[str]:
    """The anchors MkDocs gives the headings of ``page`` (Python-Markdown's toc slugify,
    which GitHub matches for these headings), code fences skipped."""
    anchors, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#{1,6} (.+)$", line)):
            anchors.add(slugify(heading.group(1).replace("`", ""), "-"))
    return anchors


def test_slugify_gives_the_anchors_the_links_use() -> None:
    # By hand: lower case, punctuation dropped, runs of spaces and hyphens to one '-'.
    assert slugify("The best configuration (`train_best`)".replace("`", ""), "-") == (
        "the-best-configuration-train_best"
    )
    assert slugify("Mult-VAE on Gowalla (against the LightGCN paper's row)", "-") == (
        "mult-vae-on-gowalla-against-the-lightgcn-papers-row"
    )


def test_readme_contents_link_every_doc_and_contributing() -> None:
    linked = {target for target, _ in LINK.findall(contents_section(README.read_text(encoding="utf-8")))}
    pages = {page.relative_to(REPO).as_posix() for page in DOCS.rglob("*.md")}
    assert pages, "docs/ has no page"
    missing = sorted((pages | {"CONTRIBUTING.md"}) - linked)
    assert not missing, f"the README's contents do not link {missing}"


def test_readme_is_under_300_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 300, f"README.md has {lines} lines; move the detail to a page of docs/"


def test_links_of_readme_and_contributing_resolve() -> None:
    broken = []
    for source in (README, REPO / "CONTRIBUTING.md"):
        for target, anchor in LINK.findall(source.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # a URL: not checked offline
                continue
            path = (source.parent / target).resolve() if target else source
            if not path.exists():
                broken.append(f"{source.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
                broken.append(f"{source.name}: {target}#{anchor}")
    assert not broken, f"links that lead nowhere: {broken}"


def test_mkdocs_build_strict_succeeds(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    built = {page.relative_to(DOCS).with_suffix("").as_posix() for page in DOCS.rglob("*.md")}
    for name in built:
        html = site / ("index.html" if name == "index" else f"{name}/index.html")
        assert html.is_file(), f"the site lacks {html.relative_to(site)}"
