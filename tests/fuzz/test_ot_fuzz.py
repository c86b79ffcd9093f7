"""Hostile industrial payloads (tests/fuzz/ot_cases.py) against the OT dissectors, without
their safety net: the named corpus, then a short Hypothesis pass per protocol.
``experiments/fuzz.py --targets ot_modbus,...`` runs the same for 100,000 inputs each."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from ot_cases import TARGETS, cases, check, corpus


@pytest.mark.parametrize("target", TARGETS)
def test_corpus(target):
    run = check(target)
    for name, build in corpus(target).items():
        try:
            run(build(), None)
        except Exception as exc:
            raise AssertionError(f"{target} {name}: {exc!r}") from exc


@pytest.mark.parametrize("target", TARGETS)
def test_hypothesis_short(target):
    run = check(target)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases(target))
    def one(case):
        run(case, None)

    one()
