"""What a score report says, and over which windows: the learning period (marked, no alerts
unless asked), --since/--until, per-device alert counts that add up, the nearest type of an
unknown device, and the IPv4 address of window rows."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from typer.testing import CliRunner

from flockwatch.serving.cli import app
from flockwatch.serving.score import SCORE_JSON_SCHEMA

KINDS = ("anomalous_window", "new_peer", "new_device")


@pytest.fixture(scope="module")
def model(site, tmp_path_factory):
    """Classifier and baseline (with its peers) on the synthetic site; the baseline learnt all
    of learning.pcap and records it as ``train baseline`` does. Returns the model folder."""
    from flockwatch.datasets.synth import HOSTS
    from flockwatch.features import WindowSpec, attribute, extract, windows
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.peers import PeerBaseline
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline, learning_record

    flows = extract([site / "learning.pcap"]).flows
    baseline, _ = fit_baseline(flows, window_s=300, epochs=40)
    both = extract([site / "learning.pcap", site / "attacks.pcap"]).flows
    win = windows(both, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    # grouped by device and capture, so that held-out groups calibrate the "unknown" rule
    clf = DeviceClassifier(n_estimators=80).fit(
        win, win["device_id"].replace_strict(types), win["source"] + win["device_id"])
    bundle = Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline,
                    peers=PeerBaseline().fit(attribute(flows)),
                    info={"kind": "baseline", "learning": learning_record(flows, None)})
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(bundle, path)
    return path


@pytest.fixture(scope="module")
def bundle(model):
    from flockwatch.models.bundle import load_bundle

    return load_bundle(model / "artifacts" / "bundle.pkl")


@pytest.fixture(scope="module")
def attack_flows(site):
    from flockwatch.features import extract

    return extract([site / "attacks.pcap"]).flows


def _claiming(bundle, capture: Path, flows: pl.DataFrame, minutes: float):
    """The bundle with a learning record saying it learnt the first ``minutes`` of
    ``capture``: the injected attacks there then fall in its learning period."""
    from flockwatch.features.hashing import file_hash
    from flockwatch.features.output import iso_utc

    t0 = flows["first_seen"].min()
    b = copy.copy(bundle)
    b.info = {**bundle.info, "learning": {
        "start": iso_utc(t0), "end": iso_utc(t0 + dt.timedelta(minutes=minutes)),
        "period_s": minutes * 60, "captures": [
            {"sha256": file_hash(capture), "name": capture.name,
             "bytes": capture.stat().st_size}]}}
    return b, t0 + dt.timedelta(minutes=minutes)


def _keys(alerts):
    return sorted((a["kind"], a["device_id"], a["start"]) for a in alerts)


def test_learning_windows_raise_no_alerts_unless_asked(bundle, site, attack_flows, tmp_path):
    """Windows of a capture the model learnt from, before its learning end, are marked
    learning and raise no alert (anomalous windows, new peers, new devices alike); with
    include_learning they raise exactly the alerts a model without the record raises. The
    capture is known by its content: a renamed copy is the same capture."""
    from flockwatch.serving.score import learnt_sources, report

    caps = site / "attacks.pcap"
    claim, end = _claiming(bundle, caps, attack_flows, 60)
    end_iso = end.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    # An older model, without a learning record, has no learning windows.
    old = copy.copy(bundle)
    old.info = {k: v for k, v in bundle.info.items() if k != "learning"}
    assert learnt_sources(old, [str(caps)]) == set()
    plain = report(old, attack_flows, [])
    assert not plain.windows["learning"].any() and plain.learning is None
    before = [a for a in plain.alerts if a["start"] < end_iso]
    assert {a["kind"] for a in before} >= {"anomalous_window", "new_peer"}

    copy_path = tmp_path / "renamed.pcap"
    shutil.copy(caps, copy_path)
    assert learnt_sources(claim, [str(caps), str(copy_path), str(site / "learning.pcap")]) \
        == {str(caps), str(copy_path)}
    rep = report(claim, attack_flows, [], learning_sources={str(caps)})
    w = rep.windows
    assert w["learning"].to_list() == (w["start"] < end).to_list()
    assert w["learning"].any() and not w["learning"].all()
    assert rep.learning == {"start": claim.learning["start"], "end": end_iso,
                            "sources": [str(caps)], "windows": int(w["learning"].sum()),
                            "alerts": False}
    assert rep.alerts and all(a["start"] >= end_iso for a in rep.alerts)
    assert _keys(rep.alerts) == _keys(a for a in plain.alerts if a["start"] >= end_iso)
    # The learning windows stay in the output, scored.
    assert w.filter(pl.col("learning"))["anomaly_score"].is_not_null().all()
    incl = report(claim, attack_flows, [], learning_sources={str(caps)}, include_learning=True)
    assert incl.windows["learning"].equals(w["learning"])
    assert _keys(incl.alerts) == _keys(plain.alerts) and incl.learning["alerts"] is True


def test_cli_learning_and_old_model(bundle, model, site, attack_flows, tmp_path):
    """Through the CLI: a model claiming attacks.pcap's first hour marks it learning (JSON,
    schema, table), --include-learning raises its alerts; the model without the record (as
    saved before flockwatch recorded learning) scores the same capture with no learning
    window."""
    from flockwatch.models.pyfunc import save_model

    claim, end = _claiming(bundle, site / "attacks.pcap", attack_flows, 60)
    save_model(claim, tmp_path / "claim")
    runner = CliRunner()
    docs = {}
    for name, m, extra in [("old", model, []), ("claim", tmp_path / "claim", []),
                           ("incl", tmp_path / "claim", ["--include-learning"])]:
        out = tmp_path / f"{name}.json"
        r = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", str(m), "--format",
                                "json", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        docs[name] = json.loads(out.read_text())
        jsonschema.validate(docs[name], SCORE_JSON_SCHEMA)
    assert docs["old"]["learning"] is None
    assert not any(w["learning"] for w in docs["old"]["windows"])
    assert docs["claim"]["learning"]["windows"] == sum(w["learning"]
                                                       for w in docs["claim"]["windows"]) > 0
    end_iso = docs["claim"]["learning"]["end"]
    assert all(a["start"] >= end_iso for a in docs["claim"]["alerts"])
    assert any(a["start"] < end_iso for a in docs["incl"]["alerts"])
    assert _keys(docs["incl"]["alerts"]) == _keys(docs["old"]["alerts"])
    table = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m",
                                str(tmp_path / "claim")])
    assert table.exit_code == 0
    assert (f"{docs['claim']['learning']['windows']} windows of the model's own learning "
            "captures fall in its learning period") in table.output
    assert "no alerts raised there (--include-learning raises them)" in table.output


@pytest.mark.slow
def test_train_baseline_learning_period_then_score_same_capture(site, tmp_path):
    """`train baseline --learning-period` records the interval and the captures' hashes;
    scoring the same captures marks exactly the windows before the learning end, and no
    alert comes from them."""
    from flockwatch.features.hashing import file_hash
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import load_model

    caps = [site / "learning.pcap", site / "attacks.pcap"]
    runner = CliRunner()
    r = runner.invoke(app, ["train", "baseline", *map(str, caps), "--learning-period", "150m",
                            "--register", "lp", "--epochs", "20"])
    assert r.exit_code == 0, r.output
    rec = bundle_of(load_model("models:/lp/1")).learning
    assert rec["period_s"] == 9000
    start = dt.datetime.fromisoformat(rec["start"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(rec["end"].replace("Z", "+00:00"))
    assert end - start == dt.timedelta(minutes=150)
    # learning.pcap is 2 h, so the first 30 minutes of attacks.pcap were learnt too
    assert sorted((c["name"], c["sha256"]) for c in rec["captures"]) == sorted(
        (p.name, file_hash(p)) for p in caps)
    out = tmp_path / "r.json"
    for extra in ([], ["--include-learning"]):
        r = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", "models:/lp/1",
                                "--format", "json", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        doc = json.loads(out.read_text())
        w = pl.DataFrame(doc["windows"])
        assert w["learning"].to_list() == (w["start"] < rec["end"]).to_list()
        assert 0 < w["learning"].sum() < w.height
        if not extra:
            assert all(a["start"] >= rec["end"] for a in doc["alerts"])
            default = _keys(doc["alerts"])
    assert set(default) <= set(_keys(doc["alerts"]))


def test_since_until_select_windows(model, site, tmp_path):
    """--since/--until keep the windows overlapping the range, cut and scored as in the whole
    run; a duration counts from the input's first flow, an ISO time is absolute."""
    runner = CliRunner()

    def score(*extra):
        out = tmp_path / "r.json"
        r = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", str(model),
                                "--format", "json", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        doc = json.loads(out.read_text())
        jsonschema.validate(doc, SCORE_JSON_SCHEMA)
        return doc

    full = score()
    t0 = min(w["start"] for w in full["windows"])  # the first window starts at the first flow
    start = dt.datetime.fromisoformat(t0.replace("Z", "+00:00"))
    lo, hi = start + dt.timedelta(minutes=30), start + dt.timedelta(minutes=70)
    iso = [x.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for x in (lo, hi)]
    part = score("--since", "30m", "--until", "70m")
    assert (part["since"], part["until"]) == tuple(iso)
    want = [w for w in full["windows"] if w["end"] > iso[0] and w["start"] < iso[1]]
    assert part["windows"] and len(part["windows"]) < len(full["windows"])
    strip = ("device_type", "type_confidence", "unknown", "nearest_type")  # per device
    assert [{k: v for k, v in w.items() if k not in strip} for w in part["windows"]] == \
        [{k: v for k, v in w.items() if k not in strip} for w in want]
    assert all(iso[0] < a["end"] and a["start"] < iso[1] for a in part["alerts"])
    assert sum(d["alerts"] for d in part["devices"]) == len(part["alerts"])
    # The same range as ISO times (a zone given, or UTC by default) gives the same report.
    naive = lo.replace(tzinfo=None).isoformat(timespec="milliseconds")
    assert score("--since", naive, "--until", iso[1])["windows"] == part["windows"]
    only_since = score("--since", "90m")
    assert only_since["until"] is None and only_since["windows"]
    # Bad bounds: one line, exit 1, before any output.
    for args, needle in [(["--since", "yesterday"], "--since 'yesterday'"),
                         (["--since", "2h", "--until", "1h"], "is not before --until")]:
        r = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", str(model), *args])
        assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output
        assert "devices" not in r.output


def test_alert_counts_add_up(bundle, site, attack_flows):
    """Every device row counts its alerts of every kind; the rows add up to the summary's
    total, in the report, the table and the plot's panel titles (the gateway's and the
    workstation's new-peer alerts included)."""
    from flockwatch.serving.plots import timeline_figure
    from flockwatch.serving.render import render_report
    from flockwatch.serving.score import report

    rep = report(bundle, attack_flows, [])
    d = rep.devices
    assert int(d["alerts"].sum()) == len(rep.alerts)
    for k in KINDS:
        assert int(d[f"alerts_{k}"].sum()) == sum(a["kind"] == k for a in rep.alerts), k
    assert (d["alerts"] == sum(d[f"alerts_{k}"] for k in KINDS)).all()
    assert int(d["alerts_new_peer"].sum()) > 0  # the kind the old counts left out
    by_dev = {r["device_id"]: r for r in d.iter_rows(named=True)}
    for a in rep.alerts:
        assert a["device_id"] in by_dev
    text = render_report(rep)
    rows = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    cols = [c.strip() for c in header.split("┃")]
    i_alerts, i_dev = cols.index("alerts"), cols.index("device")
    assert sum(int(r[i_alerts]) for r in rows if r[i_alerts].strip()) == len(rep.alerts)
    assert f"{len(rep.alerts)} alerts in {len(rep.incidents)} incident(s)" in text
    for r in rows:
        if r[i_dev].strip():
            assert int(r[i_alerts]) == by_dev[r[i_dev].strip()]["alerts"]
    fig = timeline_figure(rep.windows, max_devices=20, alerts=rep.alerts)
    shown = 0
    for ax in fig.get_axes():
        dev = ax.get_ylabel().split("\n")[0]
        title = ax.get_title(loc="right")
        m = re.fullmatch(r"(\d+) alerts?: (\d+) anomalous, (\d+) new peer, (\d+) new device",
                         title)
        assert m, title
        row = by_dev[dev]
        assert tuple(map(int, m.groups())) == (row["alerts"], *(row[f"alerts_{k}"]
                                                                 for k in KINDS))
        shown += row["alerts"]
    assert shown == len(rep.alerts)  # every device with alerts has scored windows here


def test_unknown_device_shows_its_nearest_type(bundle, site, attack_flows):
    """A device ruled unknown carries the most probable known type (``nearest_type``) and
    the table shows the confidence as that type's, never beside a bare "unknown"."""
    from flockwatch.serving.render import render_report
    from flockwatch.serving.score import report

    strict = copy.copy(bundle)
    strict.classifier = copy.deepcopy(bundle.classifier).set_reject_quantile(0.9)
    rep = report(strict, attack_flows, [])
    unknown = rep.devices.filter(pl.col("unknown"))
    known = rep.devices.filter(~pl.col("unknown"))
    assert unknown.height and known.height
    assert unknown["nearest_type"].is_in(list(strict.classifier.classes_)).all()
    assert (known["nearest_type"] == known["device_type"]).all()
    assert (rep.windows["nearest_type"].is_not_null()).all()
    text = render_report(rep)
    for r in unknown.iter_rows(named=True):
        line = next(x for x in text.splitlines() if r["device_id"] in x)
        cells = [c.strip() for c in line.split("│")]
        assert f"unknown (nearest {r['nearest_type']} {r['type_confidence']:.2f})" in cells
        assert cells[cells.index(f"unknown (nearest {r['nearest_type']} "
                                 f"{r['type_confidence']:.2f})") + 1] == ""
    # The pyfunc output (what REST and `mlflow models serve` return) carries it too.
    from flockwatch.models.scoring import score_flows

    out = score_flows(strict, attack_flows)
    assert out.filter(pl.col("unknown"))["nearest_type"].is_not_null().all()


def _flow(t_s, src_mac, src_ip, dst_mac, dst_ip, proto=17, port=53):
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t_s)
    return {"source": "cap", "first_seen": t, "last_seen": t + dt.timedelta(seconds=1),
            "src_mac": src_mac, "dst_mac": dst_mac, "src_ip": src_ip, "dst_ip": dst_ip,
            "src_port": 40000, "dst_port": port, "protocol": proto,
            "ip_version": 6 if ":" in src_ip else 4, "packets": 2, "bytes": 200,
            "src2dst_packets": 1, "dst2src_packets": 1, "src2dst_bytes": 100,
            "dst2src_bytes": 100, "application": "DNS"}


def test_window_rows_carry_the_devices_ipv4():
    """A window holding only the device's IPv6 or unspecified-address traffic (duplicate
    address detection from ::, DHCP from 0.0.0.0) shows the device's IPv4; a device without
    IPv4 shows its global IPv6 rather than its link-local one; never :: or 0.0.0.0."""
    from flockwatch.features import WindowSpec, conform, windows
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.scoring import score_flows

    hue, v6only, gw = "00:17:88:00:00:01", "00:17:88:00:00:02", "00:09:5b:00:00:09"
    flows = conform(pl.DataFrame([
        # window 1 (0-60 s): the bridge speaks only from :: and its link-local address
        _flow(1, hue, "::", "33:33:00:00:00:01", "ff02::1", 58, 0),
        _flow(5, hue, "fe80::217:88ff:fe00:1", "33:33:00:00:00:fb", "ff02::fb", 17, 5353),
        # window 2 (60-120 s): DHCP from 0.0.0.0 first, then its IPv4
        _flow(61, hue, "0.0.0.0", "ff:ff:ff:ff:ff:ff", "255.255.255.255", 17, 67),
        _flow(70, hue, "192.168.1.7", gw, "192.168.1.1"),
        # a device without IPv4: link-local first, then a global address
        _flow(2, v6only, "fe80::1", "33:33:00:00:00:fb", "ff02::fb", 17, 5353),
        _flow(3, v6only, "2001:db8::5", gw, "2001:db8::1"),
    ]))
    w = windows(flows, WindowSpec(60))
    by = {(r["device_id"], r["start"].second + 60 * r["start"].minute):
          r["ip"] for r in w.iter_rows(named=True)}
    assert by[(hue, 1)] == "fe80::217:88ff:fe00:1"  # the window's own best address
    assert by[(hue, 61)] == "192.168.1.7"  # not 0.0.0.0, whichever flow came first
    assert by[(v6only, 1)] == "2001:db8::5"
    scored = score_flows(Bundle(window=WindowSpec(60)), flows)
    ips = {d: scored.filter(pl.col("device_id") == d)["ip"].to_list() for d in (hue, v6only)}
    assert ips == {hue: ["192.168.1.7", "192.168.1.7"], v6only: ["2001:db8::5"]}


def test_sensor_scores_learnt_captures_as_new_traffic(bundle, site, attack_flows, tmp_path):
    """The live sensor has no learning windows, even for traffic identical to a learnt
    capture: every window may alert, and its inventory and alert lines take the new columns
    in their stride."""
    import sqlite3

    import mlflow

    from flockwatch.models.pyfunc import save_model
    from flockwatch.serving.sensor import Sensor

    claim, end = _claiming(bundle, site / "attacks.pcap", attack_flows, 60)
    save_model(claim, tmp_path / "claim")
    sensor = Sensor("lo", mlflow.pyfunc.load_model(str(tmp_path / "claim")),
                    alerts_path=tmp_path / "alerts.jsonl", inventory_db=tmp_path / "inv.sqlite",
                    window_s=300)
    chunk = tmp_path / "chunk.pcap"
    shutil.copy(site / "attacks.pcap", chunk)  # the very bytes the model claims it learnt
    sensor._process(chunk)
    sensor.jsonl.close()
    sensor.inventory.close()
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    alerts = [a for a in lines if "start" in a]  # risk findings share the file
    end_iso = end.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert any(a["start"] < end_iso for a in alerts)
    assert sensor.counters.alerts == len(alerts) and sensor.counters.windows > 0
    assert sensor.counters.findings == len(lines) - len(alerts)
    db = sqlite3.connect(str(tmp_path / "inv.sqlite"))
    rows = db.execute("SELECT device_id, ip, device_type FROM devices").fetchall()
    db.close()
    assert rows and all(ip not in ("::", "0.0.0.0") for _, ip, _ in rows)
