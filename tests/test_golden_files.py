"""Golden files (``tests/golden/``): a small capture written by the project's own generator,
committed beside what flockwatch reads from it. A change to extraction or to a feature's
formula shows here, and must come with a version bump and regenerated files."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
ADVICE = ("features changed: bump FEATURE_SET_VERSION (window features, features/windows.py) or "
          "EXTRACTION_VERSION (flows, features/schema.py) and regenerate with `make golden`")


def _golden_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9,
                                                                  abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differences(name: str, fresh: list[dict[str, Any]], stored: list[dict[str, Any]],
                limit: int = 5) -> list[str]:
    """Human-readable differences between a fresh reading and the stored golden rows."""
    out = []
    if len(fresh) != len(stored):
        out.append(f"{name}: {len(fresh)} rows, golden has {len(stored)}")
    cols = sorted(set().union(*(r.keys() for r in fresh[:1] + stored[:1])))
    for i, (f, s) in enumerate(zip(fresh, stored, strict=False)):
        for c in cols:
            if not _same(f.get(c), s.get(c)):
                out.append(f"{name} row {i} {c}: {f.get(c)!r}, golden {s.get(c)!r}")
                if len(out) >= limit:
                    return out
    return out


def check_golden() -> list[str]:
    mod = _golden_module()
    fresh = mod.read()
    problems = []
    for name, df in fresh.items():
        stored = json.loads((GOLDEN / f"site.{name}.json").read_text())
        problems += differences(name, mod.to_jsonable(df), stored)
    return problems


def test_golden_files_match() -> None:
    mod = _golden_module()
    stored_versions = json.loads((GOLDEN / "versions.json").read_text())
    if stored_versions != mod.versions():
        pytest.fail(f"versions {mod.versions()} but the golden files are of {stored_versions}: "
                    "regenerate them with `make golden` and commit them")
    problems = check_golden()
    assert not problems, ADVICE + ":\n" + "\n".join(problems)


def test_golden_capture_has_every_part() -> None:
    """The golden capture exercises what it pins: several devices, industrial and IT
    protocols, and product evidence."""
    inv = json.loads((GOLDEN / "site.inventory.json").read_text())
    ev = json.loads((GOLDEN / "site.evidence.json").read_text())
    assert len(inv) >= 5
    assert any(r["industrial"] for r in inv) and any(not r["industrial"] for r in inv)
    assert sum(bool(r["evidence"]) for r in ev) >= 3


def test_a_changed_feature_formula_fails_the_golden_test(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The proof that the golden test guards the features: one feature's formula changed
    (packet sizes as if every packet were one byte longer), and it fails, naming the
    feature and asking for the version bump."""
    import importlib

    import polars as pl

    W = importlib.import_module("flockwatch.features.windows")

    original = W.window_features

    def changed(att: pl.DataFrame) -> pl.DataFrame:
        out = original(att)
        return out.with_columns(pl.col("mean_packet_size") + 1.0)

    monkeypatch.setattr(W, "window_features", changed)
    problems = check_golden()
    assert problems and all(p.startswith("windows") for p in problems), problems
    assert any("mean_packet_size" in p for p in problems)
    with pytest.raises(AssertionError, match="bump FEATURE_SET_VERSION"):
        test_golden_files_match()
