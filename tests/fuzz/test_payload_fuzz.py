"""The payload pass's parsers and scan under hostile input: the named corpus, then a short
Hypothesis pass of each target (``experiments/fuzz.py`` runs them for 100,000 inputs)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from payload_fuzz import (
    CORPUS,
    DISSECTORS,
    Flow,
    ScanCase,
    certificate_cases,
    check_certificate,
    check_entries,
    check_flow,
    check_scan,
    flow_cases,
    scan_cases,
)


def _short(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", list(CORPUS))
def test_payload_corpus(name: str) -> None:
    check_flow(CORPUS[name]())


@_short(150)
@given(flow_cases(tuple(DISSECTORS)))
def test_dissectors_fuzz(flow: Flow) -> None:
    check_flow(flow)


@_short(60)
@given(certificate_cases())
def test_certificate_fuzz(der: bytes) -> None:
    check_certificate(der)


@_short(25)
@given(scan_cases())
def test_scan_fuzz(case: ScanCase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_scan(case, Path(tmp))


def test_the_checks_catch_a_leak() -> None:
    """The check is no rubber stamp: a secret or an unknown kind fails it."""
    with pytest.raises(AssertionError):
        check_entries([(False, "http_user_agent=x Zq7-SECRET-pw")])
    with pytest.raises(AssertionError):
        check_entries([(False, "password=1")])
    with pytest.raises(AssertionError):
        check_entries([(False, "cleartext_login=plaintext")])
