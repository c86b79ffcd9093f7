"""Hostile captures and Zeek logs: the named corpus of issue 18, then a short Hypothesis pass.

Each input must be read, or refused with one ``flockwatch: error:`` line; what is read must add
up (packets in = packets in flows + packets reported skipped; rows in = rows kept + rows
reported skipped) and hold only values Zeek writes. ``experiments/fuzz.py`` runs the same
strategies for 100,000 inputs a parser.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hostile import (
    CAPTURE_CORPUS,
    ZEEK_CORPUS,
    CaptureCase,
    ZeekCase,
    capture_cases,
    check_capture,
    check_zeek,
    zeek_cases,
)
from hypothesis import HealthCheck, given, settings


def _short(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", list(CAPTURE_CORPUS))
def test_capture_corpus(name: str, tmp_path: Path) -> None:
    check_capture(CAPTURE_CORPUS[name](), tmp_path)


@pytest.mark.parametrize("name", list(ZEEK_CORPUS))
def test_zeek_corpus(name: str, tmp_path: Path) -> None:
    check_zeek(ZEEK_CORPUS[name](), tmp_path)


@_short(40)
@given(capture_cases())
def test_capture_reader_fuzz(case: CaptureCase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_capture(case, Path(tmp))


@_short(60)
@given(zeek_cases())
def test_zeek_reader_fuzz(case: ZeekCase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_zeek(case, Path(tmp))
