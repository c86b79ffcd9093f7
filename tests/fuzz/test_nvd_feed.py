"""Hostile NVD feeds (tests/fuzz/nvd.py): the named corpus, then a short Hypothesis pass.
Each feed imports, or fails with one line naming the file (and the entry), the database as it
was. ``experiments/fuzz.py --targets nvd_feed`` runs the same strategy for 100,000 inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from nvd import FEED_CORPUS, FeedCase, check_feed, feed_cases


@pytest.mark.parametrize("name", sorted(FEED_CORPUS))
def test_corpus(name: str, tmp_path: Path) -> None:
    check_feed(FEED_CORPUS[name](), tmp_path)


def test_corpus_inputs_are_refused_with_the_reason(tmp_path: Path) -> None:
    from flockwatch.serving.vulns import FeedError, update

    for name, want in [("deep", "nested too deeply"), ("huge_number", "not valid JSON"),
                       ("lone_surrogate", "cve.id: expected CVE-YYYY-NNNN"),
                       ("utf16", "not UTF-8 text"), ("nan_score", "found nan")]:
        path = tmp_path / f"{name}.json"
        path.write_bytes(FEED_CORPUS[name]().data)
        with pytest.raises(FeedError, match=want):
            update([path], db=tmp_path / "v.sqlite")


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(feed_cases())
def test_hostile_feeds(case: FeedCase) -> None:
    with tempfile.TemporaryDirectory(prefix="flockwatch-nvd-") as tmp:
        check_feed(case, Path(tmp))
