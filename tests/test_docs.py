"""The README is a newcomer's page and docs/ the reference: both stay true to the code.

The generated parts of docs/ (flow schema, feature families) must be what `make docs` writes
today; every link must land on a file and heading that exist; the README stays short, keeps
the two quick-start commands CI runs, and lists every command the CLI has.
"""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import typer
from conftest import REPO

from flockwatch.features.schema import FLOW_COLUMNS
from flockwatch.features.windows import FEATURE_COLUMNS, feature_families_markdown

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} +(.+)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_generated_parts_are_up_to_date():
    stale = [page.name for page, _ in _generator().stale_pages(DOCS)]
    assert not stale, f"run `make docs`: generated parts of {stale} are out of date"


def test_generated_blocks_are_there_and_known():
    gen = _generator()
    blocks = {m.group("name") for p in DOCS.glob("*.md") for m in gen.BLOCK.finditer(p.read_text())}
    assert blocks == set(gen.GENERATORS)
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        gen.render("<!-- generated: nope -->\nx\n<!-- /generated -->\n")


def test_regenerating_rewrites_a_stale_block(tmp_path):
    gen = _generator()
    page = tmp_path / "flows.md"
    page.write_text("intro\n<!-- generated: flow-schema -->\nold table\n<!-- /generated -->\nend\n")
    [(stale, new)] = gen.stale_pages(tmp_path)
    assert stale == page and "old table" not in new
    assert new.startswith("intro\n") and new.endswith("<!-- /generated -->\nend\n")
    assert gen.render(new) == new


def test_docs_hold_the_contracts_as_the_code_defines_them():
    flows = (DOCS / "flows.md").read_text()
    for name in FLOW_COLUMNS:
        assert f"| `{name}` |" in flows
    features = (DOCS / "features.md").read_text()
    assert feature_families_markdown() in features
    assert f"The {len(FEATURE_COLUMNS)} feature columns" in features


def test_feature_families_cover_every_column_once():
    rows = feature_families_markdown().splitlines()[2:]
    counts = [int(r.split(" | ")[2]) for r in rows]
    assert sum(counts) == len(FEATURE_COLUMNS)
    assert len(rows) < 60  # families, not one row per column
    assert "| `name_token_00 .. name_token_63` | 64 |" in feature_families_markdown()
    assert "| `fingerprint_00 .. fingerprint_31` | 32 |" in feature_families_markdown()


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for link in _links(page):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no file)")
            elif anchor and anchor not in _anchors(target):
                broken.append(f"{page.name}: {link} (no heading)")
    assert not broken, broken


def test_readme_links_every_docs_page():
    linked = {(REPO / link.partition("#")[0]).resolve() for link in _links(README)}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages <= linked, sorted(p.name for p in pages - linked)


def test_readme_is_short_and_keeps_the_quick_start():
    text = README.read_text()
    assert len(text.splitlines()) <= 210
    quick = text.split("## Quick start", 1)[1].split("```")[1]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def _command_paths() -> list[str]:
    from flockwatch.serving.cli import app

    def walk(cmd, prefix: str) -> list[str]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [prefix]
        return [p for name, sub in subs.items() for p in walk(sub, f"{prefix} {name}".strip())]

    return walk(typer.main.get_command(app), "")


def test_readme_command_table_lists_every_command():
    section = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `flockwatch ")]
    paths = _command_paths()
    assert len(paths) >= 10
    missing = [p for p in paths if not any(r.startswith(f"| `flockwatch {p}") for r in rows)]
    assert not missing, f"commands missing from the README's command table: {missing}"
