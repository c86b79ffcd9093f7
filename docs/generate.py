"""Regenerate the generated parts of docs/ from the code that defines them (`make docs`).

A generated part sits between `<!-- generated: NAME -->` and `<!-- /generated -->`; everything
else in a page is written by hand and left alone. The flow schema and the feature columns are
contracts the code defines, so the pages take them from the code rather than from a copy that
drifts: tests/test_docs.py fails when a page differs from what this script would write.

    python docs/generate.py          # rewrite stale pages in place
    python docs/generate.py --check  # list stale pages, exit 1 if any
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent

BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S
)


def _flow_schema() -> str:
    from flockwatch.features.schema import flow_schema_markdown

    return flow_schema_markdown()


def _feature_count() -> str:
    from flockwatch.features.windows import FEATURE_COLUMNS, FEATURE_SET_VERSION

    return (
        f"The {len(FEATURE_COLUMNS)} feature columns (`flockwatch.features.FEATURE_COLUMNS`, "
        f"feature set version {FEATURE_SET_VERSION}), by family:"
    )


def _feature_families() -> str:
    from flockwatch.features.windows import feature_families_markdown

    return feature_families_markdown()


GENERATORS: dict[str, Callable[[], str]] = {
    "flow-schema": _flow_schema,
    "feature-count": _feature_count,
    "feature-families": _feature_families,
}


def render(text: str, where: str = "page") -> str:
    """The page with every generated block rewritten; an unknown block name is an error."""

    def block(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated block {name!r}")
        return f"{m.group(1)}{GENERATORS[name]().rstrip()}\n{m.group(4)}"

    return BLOCK.sub(block, text)


def stale_pages(docs: Path = DOCS) -> list[tuple[Path, str]]:
    """(page, regenerated text) for every page whose generated parts are out of date."""
    out = []
    for page in sorted(docs.glob("*.md")):
        text = page.read_text()
        new = render(text, page.name)
        if new != text:
            out.append((page, new))
    return out


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = stale_pages()
    for page, new in stale:
        if check:
            print(f"docs: {page.name}: generated parts are stale (run `make docs`)")
        else:
            _write_atomic(page, new)
            print(f"docs: {page.name}: regenerated")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
