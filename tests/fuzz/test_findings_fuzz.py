"""The risk rules on hostile flow tables (tests/fuzz/findings_cases.py): the stored corpus
and a short Hypothesis run here; experiments/fuzz.py --targets findings runs the campaign."""

from __future__ import annotations

from typing import Any

import pytest
from findings_cases import CORPUS, check_findings, flow_tables
from hypothesis import HealthCheck, given, settings


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_findings_corpus(name: str) -> None:
    check_findings(CORPUS[name])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_tables())
def test_findings_never_crash(rows: list[dict[str, Any]]) -> None:
    check_findings(rows)
