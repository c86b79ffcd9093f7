"""Bounded memory without a changed answer: a report scored in parts (``score_parts``) is the
report of the whole input, byte for byte; NFStream's flows converted a batch at a time are the
flows converted at once; capture walks that give back their pages read what they read before."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flockwatch.features import WindowSpec, attribute, extract, windows
from flockwatch.serving.score import report, score_parts

GOLDEN = Path(__file__).resolve().parent / "golden" / "site.pcap"


@pytest.fixture(scope="module")
def bundles(site):
    """The synthetic site's bundle three ways: classifier, baseline, peers and a learning
    record; the same with the classifier on 60 s windows; and with the three-level
    identifier (product evidence per device)."""
    from flockwatch.datasets.synth import HOSTS
    from flockwatch.features.evidence import device_evidence
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.identity import DeviceIdentifier
    from flockwatch.models.peers import PeerBaseline
    from flockwatch.training.baseline import fit_baseline, learning_record

    learn = extract([site / "learning.pcap"]).flows
    baseline, _ = fit_baseline(learn, window_s=300, epochs=20)
    both = extract([site / "learning.pcap", site / "attacks.pcap"]).flows
    win = windows(both, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    y = win["device_id"].replace_strict(types)
    clf = DeviceClassifier(n_estimators=40).fit(win, y, win["source"] + win["device_id"])
    plain = Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline,
                   peers=PeerBaseline().fit(attribute(learn)),
                   info={"kind": "baseline", "learning": learning_record(learn, None)})
    ev = device_evidence(both)
    samples = {(src, types[dev]): [list(toks)] for src, dev, toks in ev.iter_rows()
               if dev in types}
    ident = DeviceIdentifier().fit(win, y, win["source"], samples,
                                   categories={h.device_type: h.category for h in HOSTS})
    return {
        "plain": plain,
        "classifier_window": dataclasses.replace(plain, classifier_window=WindowSpec(60)),
        "identity": dataclasses.replace(plain, classifier=ident),
    }


@pytest.fixture(scope="module")
def site_flows(site):
    return extract([site / "learning.pcap", site / "attacks.pcap"]).flows


@pytest.mark.parametrize("variant", ["plain", "classifier_window", "identity"])
def test_report_in_parts_is_the_whole_report(bundles, site, site_flows, variant):
    bundle = bundles[variant]
    learnt = [str(site / "learning.pcap")]
    whole = score_parts(bundle, site_flows, segment_flows=None)
    assert whole.parts == 1
    split = score_parts(bundle, site_flows, segment_flows=300)
    assert split.parts >= 4  # really cut: 4 h of a dozen devices
    for kwargs in ({}, {"since": 1800.0, "until": 5400.0}, {"include_learning": True}):
        one = report(bundle, site_flows, [], "m", learning_sources=learnt,
                     segment_flows=None, **kwargs).to_json()
        for size in (300, 2000):
            assert report(bundle, site_flows, [], "m", learning_sources=learnt,
                          segment_flows=size, **kwargs).to_json() == one, (size, kwargs)
    doc = report(bundle, site_flows, [], "m", learning_sources=learnt).to_json()
    assert '"kind": "anomalous_window"' in doc and '"kind": "new_peer"' in doc


def test_parts_credit_flows_as_the_whole_input_does(site_flows):
    """A gateway is known by the whole source (a remote address it carries): a part that
    holds none of its remote traffic still does not credit it as a device."""
    from flockwatch.features.attribution import attribution_context

    ctx = attribution_context(site_flows)
    whole = attribute(site_flows)
    half = site_flows.height // 2
    parts = pl.concat([attribute(site_flows.slice(0, half), ctx),
                       attribute(site_flows.slice(half), ctx)])
    key = ["flow_index", "device_id", "direction"]
    assert whole.height == parts.height
    assert whole.drop("flow_index").sort(key[1:] + ["first_seen", "peer_ip"]).equals(
        parts.drop("flow_index").sort(key[1:] + ["first_seen", "peer_ip"]))


def test_report_in_parts_on_shared_captures(bundles, shared_data):
    """Real captures: a multi-day one (many windows) and a folder of several sources."""
    bundle = bundles["plain"]
    for srcs in ([shared_data / "long-term-iot" / "lockly-hub"],
                 [shared_data / "modbus-scada",
                  shared_data / "iot-sentinel" / "Aria"]):
        flows = extract(srcs).flows
        size = max(50, flows.height // 6)
        assert score_parts(bundle, flows, segment_flows=size).parts > 1
        for kwargs in ({}, {"since": 3600.0}):
            one = report(bundle, flows, [], "m", segment_flows=None, **kwargs).to_json()
            assert report(bundle, flows, [], "m", segment_flows=size,
                          **kwargs).to_json() == one


def test_flow_batches_give_the_same_flows(monkeypatch):
    import flockwatch.features.flows as ff

    whole, _ = ff.read_capture(GOLDEN)
    monkeypatch.setattr(ff, "BATCH_FLOWS", 3)
    batched, _ = ff.read_capture(GOLDEN)
    assert whole.height > 3
    assert batched.equals(whole)


def test_walks_that_give_back_pages_read_the_same(monkeypatch, tmp_path):
    import flockwatch.features.captures as fc
    from flockwatch.features.announce import read_announcements

    data = GOLDEN.read_bytes()
    assert data[:4] in fc.PCAP_MAGIC and len(data) > 4 * 8192  # several 8 KiB trim steps
    info = fc.inspect_capture(GOLDEN)
    before = (info, read_announcements(GOLDEN),
              [p.path.read_bytes() for p in fc.write_repaired(GOLDEN, info, tmp_path)])
    calls = []
    real = fc.Trim.__call__

    def spy(self, off):
        calls.append(off)
        return real(self, off)

    monkeypatch.setattr(fc, "TRIM_BYTES", 8192)
    monkeypatch.setattr(fc.Trim, "__call__", spy)
    (tmp_path / "small").mkdir()
    after = (fc.inspect_capture(GOLDEN), read_announcements(GOLDEN),
             [p.path.read_bytes() for p in fc.write_repaired(GOLDEN, info, tmp_path / "small")])
    assert len(calls) >= 3 * 4  # each walk gave pages back on the way
    assert after[0] == before[0]
    assert after[1].equals(before[1])
    assert after[2] == before[2]


def test_deviations_in_batches_are_the_deviations_of_one_batch(bundles, site_flows,
                                                               monkeypatch):
    """Each window scores the same in batches as in one: numpy's float32 matrix product gives
    a row the same result in any batch of several rows (one row takes another BLAS path)."""
    import flockwatch.models.baseline as mb

    baseline = bundles["plain"].baseline
    win = windows(site_flows, WindowSpec(300))
    # many more windows than a batch: the site's, repeated with their features scaled
    many = pl.concat([win.with_columns(pl.col(baseline.feature_names_) * (1 + i / 50))
                      for i in range(12)])
    one = baseline.deviations(many)
    monkeypatch.setattr(mb, "DEVIATION_BATCH", 97)
    assert many.height > 4 * 97
    split = baseline.deviations(many)
    for field in ("scores", "index", "observed", "expected", "share"):
        assert np.array_equal(getattr(split, field), getattr(one, field)), field
    assert split.json().equals(one.json())
