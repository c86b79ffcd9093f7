"""The import rule of ARCHITECTURE.md, checked over the package: imports go one way.

``features`` imports nothing else of the project; ``datasets`` may use ``features``; ``models``
imports only ``features`` (the contract); ``training`` imports ``datasets``, ``features`` and
``models``; ``serving`` imports ``features`` and ``models``, never ``training`` or
``datasets``, so a sensor never loads training code. The one exception is the face: the CLI's
command modules attach the training and dataset commands by importing them inside the command
functions (lazily), never at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("features", "datasets", "models", "training", "serving")
ALLOWED = {
    "features": {"features"},
    "datasets": {"features", "datasets"},
    "models": {"features", "models"},
    "training": {"features", "datasets", "models", "training"},
    "serving": {"features", "models", "serving"},
}
#: Modules that may import ``training``/``datasets`` inside functions (the CLI face).
FACE = ("serving/cli.py", "serving/commands/")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported flockwatch layer, line, at module level) of every project import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    top = {id(n) for n in tree.body}
    # statements nested in `if TYPE_CHECKING:` at module level count as module level
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "flockwatch" and len(parts) > 1 and parts[1] in LAYERS:
                out.append((parts[1], node.lineno, id(node) in top))
    return out


def violations() -> list[str]:
    bad = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            face = rel.startswith(FACE)
            for imported, line, module_level in _imports(path):
                if imported in ALLOWED[layer]:
                    continue
                if face and not module_level and imported in ("training", "datasets"):
                    continue
                bad.append(f"{rel}:{line}: {layer} imports {imported}"
                           + ("" if module_level else " (inside a function)"))
    return bad


def test_imports_go_one_way() -> None:
    bad = violations()
    assert not bad, "imports against the layering (ARCHITECTURE.md):\n" + "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path: Path, monkeypatch) -> None:
    """The check is not vacuous: a features module importing models is reported, and a
    serving module importing training lazily outside the CLI face too."""
    import sys

    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "bad.py").write_text("from flockwatch.models.store import x\n")
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "sneaky.py").write_text(
        "def f():\n    import flockwatch.training.classifier\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations() == ["features/bad.py:1: features imports models",
                            "serving/sneaky.py:2: serving imports training (inside a function)"]
