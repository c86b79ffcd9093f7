"""Explanations a person can read: labels, units, ranges, and what fell into a hashed bucket
(features/explain.py, models/deviations.explain_windows), on real scoring of the synthetic
site with a real baseline."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from flockwatch.features.explain import (
    describe,
    feature_label,
    feature_range,
    present,
    vocabulary,
    window_tokens,
)
from flockwatch.features.windows import FEATURE_COLUMNS, token_bucket


def test_every_feature_has_a_label_and_a_range() -> None:
    for c in FEATURE_COLUMNS:
        assert feature_label(c) != c, c
        lo, hi = feature_range(c)
        assert lo == 0.0 and hi in (1.0, math.inf), c
    assert feature_label("port_23_share") == "share of flows to port 23"
    assert feature_label("app_telnet_share") == "share of flows that are Telnet"
    assert feature_label("name_token_57") == "host-name words"
    assert feature_range("syn_ratio") == (0.0, 1.0)


def test_values_in_the_features_units() -> None:
    assert present("port_23_share", 0.45) == "45%"
    assert present("port_23_share", -0.0076) == "0%"  # a share is never negative
    assert present("log_flows", math.log1p(120)) == "120"
    assert present("log_bytes_out", math.log1p(3200)) == "3.2 kB"
    assert present("log_mean_flow_duration", math.log1p(1.5)) == "1.5 s"
    assert present("mean_packet_size", 512.0) == "512 B"
    assert describe("port_23_share", 0.45, -0.01) == "share of flows to port 23: 45% (expected 0%)"


def _flows(names: list[tuple[str, str]]) -> pl.DataFrame:
    """Attributed flows with window columns: (device, server name) each."""
    t = pl.datetime(2026, 1, 1, time_zone="UTC")
    return pl.DataFrame({"device_id": [d for d, _ in names],
                         "server_name": [n for _, n in names]}).with_columns(
        pl.lit("s").alias("source"), t.alias("start"), t.alias("end"),
        pl.lit(None, dtype=pl.String).alias("client_fingerprint"),
        pl.lit(None, dtype=pl.String).alias("user_agent"))


def test_bucket_members_and_never_seen_words() -> None:
    from flockwatch.models.deviations import explain_windows

    keys = ["source", "device_id", "start", "end"]
    att = _flows([("cam", "files.transfer-now.example.cc"), ("cam", "cloud.vendor.com")])
    toks = window_tokens(att, keys)
    assert set(toks["tok"]) == {"files", "transfer", "now", "example", "cc", "cloud", "vendor"}
    for f, tok in toks.select("feature", "tok").iter_rows():
        assert f == f"name_token_{token_bucket(tok, 64):02d}"
    learnt = vocabulary(_flows([("cam", "cloud.vendor.com")]))
    assert learnt == {"cam": frozenset({"name:cloud", "name:vendor"})}
    feature = f"name_token_{token_bucket('transfer', 64):02d}"
    top = [{"feature": feature, "observed": 0.18, "expected": 0.0, "share": 0.4},
           {"feature": "port_443_share", "observed": 1.0, "expected": 0.3, "share": 0.2}]
    out = att.select(keys).unique().with_columns(
        pl.lit(True).alias("anomalous"), pl.lit(json.dumps(top)).alias("top_features"))
    got = json.loads(explain_windows(out, toks, learnt)["top_features"][0])
    assert "transfer" in got[0]["values"] and "transfer" in got[0]["new_values"]
    assert "never seen while learning" in got[0]["text"] and "transfer" in got[0]["text"]
    assert got[1]["text"] == "share of flows to port 443: 100% (expected 30%)"
    assert "values" not in got[1]
    # A model without a vocabulary lists the words and cannot say which are new.
    got = json.loads(explain_windows(out, toks, None)["top_features"][0])
    assert "transfer" in got[0]["values"] and "new_values" not in got[0]


@pytest.fixture(scope="module")
def scored_site(site):
    from flockwatch.features import extract
    from flockwatch.features.attribution import attribute
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.scoring import score_flows
    from flockwatch.training.baseline import fit_baseline

    learn = extract([site / "learning.pcap"]).flows
    model, _ = fit_baseline(learn, window_s=300.0, epochs=30)
    bundle = Bundle(window=WindowSpec(300.0), baseline=model,
                    vocabulary=vocabulary(attribute(learn)))
    attacks = extract([site / "attacks.pcap"]).flows
    return score_flows(bundle, attacks), bundle, attacks


def test_scored_alert_windows_read_as_text(scored_site) -> None:
    scored_site, _, _ = scored_site
    flagged = scored_site.filter(pl.col("anomalous"))
    assert flagged.height > 0
    hashed_new = 0
    for raw in flagged["top_features"].to_list():
        for t in json.loads(raw):
            lo, hi = feature_range(t["feature"])
            assert lo <= t["expected"] <= hi, t  # within the feature's range
            assert t["label"] and t["text"] and not t["text"].startswith(t["feature"])
            if "values" in t:
                n = 64 if t["feature"].startswith("name_token_") else 32
                assert all(token_bucket(v, n) == int(t["feature"][-2:]) for v in t["values"])
                hashed_new += bool(t["new_values"])
    # the attacks bring names and fingerprints the devices never showed while learning
    assert hashed_new > 0
    # every window's expected value, alerting or not, stays in range
    for raw in scored_site["top_features"].drop_nulls().to_list():
        for t in json.loads(raw):
            lo, hi = feature_range(t["feature"])
            assert lo <= t["expected"] <= hi, t


def test_report_alerts_read_as_text_scored_whole_or_in_parts(scored_site) -> None:
    """``score``'s report (scored in parts) explains its alerts as the pyfunc does."""
    from flockwatch.serving.score import report

    scored, bundle, attacks = scored_site
    whole = report(bundle, attacks, [])
    parts = report(bundle, attacks, [], segment_flows=2_000)
    assert whole.to_json() == parts.to_json()
    windows = {(w["device_id"], w["start"]): w for w in whole.alerts
               if w["kind"] == "anomalous_window"}
    assert windows
    for a in windows.values():
        assert all(t["text"] for t in a["top_features"])
        assert "expected" in a["message"] or "never seen" in a["message"]


def test_window_tokens_in_python_and_polars_agree(site) -> None:
    """A request's alerting windows are read in plain Python, a capture's in polars: the
    same words and fingerprints under the same features, in the same order."""
    from flockwatch.features import WindowSpec, read_capture
    from flockwatch.features.attribution import attribute
    from flockwatch.features.windows import assign_windows

    flows = pl.concat([read_capture(site / "attacks.pcap")[0],
                       read_capture(site / "learning.pcap")[0].head(2000)])
    att = assign_windows(attribute(flows), WindowSpec(300))
    keys = ["source", "device_id", "start", "end"]
    small = window_tokens(att, keys, small=True)
    assert small.height > 100 and small["feature"].str.starts_with("fingerprint_").any()
    assert small.equals(window_tokens(att, keys, small=False))
    assert window_tokens(att.head(0), keys, small=True).equals(
        window_tokens(att.head(0), keys, small=False))
