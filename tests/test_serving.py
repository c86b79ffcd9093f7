"""Serving: the pyfunc model, `score` JSON, REST over real HTTP, `mlflow models serve`."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import polars as pl
import pytest
from conftest import free_port, small_pcap
from typer.testing import CliRunner

from flockwatch.features.windows import FEATURE_SET_VERSION
from flockwatch.serving.cli import app
from flockwatch.serving.score import SCORE_JSON_SCHEMA

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(site, tmp_path_factory):
    """Classifier + baseline trained on the synthetic site, saved as one pyfunc folder."""
    from flockwatch.datasets.synth import HOSTS
    from flockwatch.features import WindowSpec, extract
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline

    flows = extract([site / "learning.pcap"]).flows
    baseline, _ = fit_baseline(flows, window_s=300, epochs=40)
    from flockwatch.features import windows

    both = extract([site / "learning.pcap", site / "attacks.pcap"]).flows
    win = windows(both, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    clf = DeviceClassifier(n_estimators=80).fit(
        win, win["device_id"].replace_strict(types), win["source"])
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline), path)
    return path


def test_pyfunc_round_trip_identical(trained, site):
    import mlflow

    from flockwatch.features import extract
    from flockwatch.models.bundle import load_bundle
    from flockwatch.models.scoring import flows_to_pandas, score_flows, to_records_frame

    flows = extract([site / "attacks.pcap"]).flows
    model = mlflow.pyfunc.load_model(str(trained))
    got = model.predict(flows_to_pandas(flows))
    direct = to_records_frame(score_flows(load_bundle(trained / "artifacts" / "bundle.pkl"),
                                          flows))
    assert list(got.columns)[:6] == ["source", "device_id", "mac", "ip", "start", "end"]
    assert got.equals(direct)
    # Timestamps as timezone-naive UTC datetimes or ISO-8601 strings: the same output.
    as_dt = flows.with_columns(pl.col("first_seen", "last_seen").dt.replace_time_zone(None))
    assert model.predict(as_dt.to_pandas()).equals(direct)
    as_iso = flows.with_columns(pl.col("first_seen", "last_seen").dt.strftime(
        "%Y-%m-%dT%H:%M:%S%.3fZ"))
    assert model.predict(as_iso.to_pandas()).equals(direct)
    assert got["anomalous"].any() and (~got["anomalous"]).any()
    assert got["device_type"].notna().all()


def test_score_json_matches_schema(trained, site, tmp_path):
    out = tmp_path / "report.json"
    r = CliRunner().invoke(app, ["score", str(site / "attacks.pcap"), "--model", str(trained),
                                 "--format", "json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    kinds = {a["kind"] for a in doc["alerts"]}
    assert "anomalous_window" in kinds
    plc = next(d for d in doc["devices"] if d["device_id"] == "00:00:54:81:00:81")
    assert plc["device_type"] == "plc" and plc["industrial_protocols"] == ["Modbus"]
    # 2 h of 300 s windows: at most 24 learning windows, far from the 150 (20 % held back =
    # 30) a threshold of its own needs.
    assert plc["baseline"] == "thin" and 0 < plc["learning_windows"] <= 24
    # Every alert is in exactly one incident; the table lists incidents, not every alert.
    members = sorted(i for inc in doc["incidents"] for i in inc["alerts"])
    assert members == list(range(len(doc["alerts"])))
    assert all(doc["alerts"][i]["incident"] == inc["id"]
               for inc in doc["incidents"] for i in inc["alerts"])
    assert [inc["id"] for inc in doc["incidents"]] == list(range(1, len(doc["incidents"]) + 1))
    assert len(doc["incidents"]) < len(doc["alerts"])
    table = CliRunner().invoke(app, ["score", str(site / "attacks.pcap"), "--model",
                                     str(trained)])
    assert table.exit_code == 0 and "thin (" in table.output
    assert f"{len(doc['alerts'])} alerts in {len(doc['incidents'])} incident(s)" in table.output


def _alert(device, ip, start, end, kind="anomalous_window", severity="low", peers=(),
           local=()):
    return {"kind": kind, "severity": severity, "device_id": device, "ip": ip,
            "start": f"2026-01-01T00:{start:02d}:00Z", "end": f"2026-01-01T00:{end:02d}:00Z",
            **({"new_peers": list(peers)} if peers else {}),
            **({"local_peers": list(local)} if local else {})}


def test_incidents_group_a_scan_and_consecutive_windows():
    from flockwatch.serving.alerts import incidents

    cam, v1, v2, v3, tv = "cam", "v1", "v2", "v3", "tv"
    alerts = [
        # a camera scans three devices in the 00:10-00:15 window: each victim meets it as a
        # new peer, one also deviates
        _alert(cam, "10.0.0.9", 10, 15, severity="high"),
        _alert(v1, "10.0.0.1", 10, 15, "new_peer", "medium", ["10.0.0.9:22", "10.0.0.9:23"]),
        _alert(v2, "10.0.0.2", 10, 15, "new_peer", "medium", ["10.0.0.9:502"]),
        _alert(v3, "10.0.0.3", 10, 15, "new_peer", "high", ["10.0.0.9:80"]),
        _alert(v3, "10.0.0.3", 10, 15),
        # at the same time, unrelated: the TV deviates, over two consecutive windows
        _alert(tv, "10.0.0.7", 10, 15, severity="medium"),
        _alert(tv, "10.0.0.7", 15, 20),
        # later, the camera again, alone
        _alert(cam, "10.0.0.9", 40, 45),
        # a plug brute-forces telnet on two devices: no new peers (probes), but each victim
        # deviates while talking to the plug, and all three talk to the gateway, which is
        # no origin (it does not alert)
        _alert("plug", "10.0.0.5", 50, 55, severity="high", local=["10.0.0.2", "10.0.0.3"]),
        _alert(v2, "10.0.0.2", 50, 55, local=["10.0.0.5", "10.0.0.254"]),
        _alert(v3, "10.0.0.3", 50, 55, local=["10.0.0.254", "10.0.0.5"]),
        # a device alone whose deviation involved an alerting device of another time
        _alert(v1, "10.0.0.1", 58, 59, local=["10.0.0.5"]),
    ]
    got = incidents(alerts)
    assert [(i["id"], i["alerts"]) for i in got] == [
        (1, [0, 1, 2, 3, 4]), (2, [5, 6]), (3, [7]), (4, [8, 9, 10]), (5, [11])]
    scan, tv_inc, later, brute, alone = got
    assert scan["origin"] == cam and scan["severity"] == "high"
    assert scan["devices"][0] == v3 and set(scan["devices"]) == {cam, v1, v2, v3}
    assert scan["kinds"] == {"anomalous_window": 2, "new_peer": 3}
    assert "3 other devices talked to cam (10.0.0.9)" in scan["message"]
    assert (scan["start"], scan["end"]) == ("2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z")
    assert tv_inc["origin"] == tv and tv_inc["end"] == "2026-01-01T00:20:00Z"
    assert later["origin"] == cam and later["severity"] == "low"
    assert brute["origin"] == "plug"
    assert "2 other devices talked to plug (10.0.0.5)" in brute["message"]
    assert alone["origin"] == v1 and alone["devices"] == [v1]
    # Order of the input does not change the grouping.
    rev = incidents(alerts[::-1])
    assert [sorted(len(alerts) - 1 - i for i in inc["alerts"]) for inc in rev] == \
        [inc["alerts"] for inc in got]
    assert incidents([]) == []


def test_incidents_equal_pairwise_reference():
    """The linear sweep groups exactly as comparing every pair of alerts would."""
    import random

    from flockwatch.serving.alerts import incidents

    def reference(alerts):
        n = len(alerts)
        parent = list(range(n))

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i

        def peers(a):
            return ({p.rpartition(":")[0] for p in a.get("new_peers") or ()}
                    | set(a.get("local_peers") or ()))

        for i in range(n):
            for j in range(n):
                a, b = alerts[i], alerts[j]
                if a["start"] <= b["end"] and b["start"] <= a["end"] and (
                        a["device_id"] == b["device_id"] or b["ip"] in peers(a)):
                    parent[find(i)] = find(j)
        groups = {}
        for i in range(n):
            groups.setdefault(find(i), []).append(i)
        return sorted(sorted(g) for g in groups.values())

    rng = random.Random(0)
    for _ in range(200):
        alerts = []
        for _ in range(rng.randint(1, 25)):
            d = rng.randint(0, 7)
            t = rng.randint(0, 40)
            alerts.append(_alert(f"d{d}", f"10.0.0.{d}", t, t + rng.choice([1, 2, 5]),
                                 peers=[f"10.0.0.{rng.randint(0, 9)}:22"]
                                 if rng.random() < 0.3 else (),
                                 local=[f"10.0.0.{rng.randint(0, 9)}"]
                                 if rng.random() < 0.3 else ()))
        got = sorted(sorted(inc["alerts"]) for inc in incidents(alerts))
        assert got == reference(alerts)


def test_incident_numbers_across_batches():
    """The sensor's alerts arrive a window at a time: one story keeps one number across
    batches, an unrelated or later alert gets a new one, and CEF carries it."""
    from flockwatch.serving.alerts import IncidentTracker, cef_line

    tracker = IncidentTracker(horizon_s=300)
    batch1 = [_alert("cam", "10.0.0.9", 10, 15, severity="high"),
              _alert("tv", "10.0.0.7", 10, 15)]
    batch2 = [_alert("v1", "10.0.0.1", 15, 20, "new_peer", "medium", ["10.0.0.9:22"]),
              _alert("plug", "10.0.0.5", 15, 20)]
    batch3 = [_alert("cam", "10.0.0.9", 50, 55)]  # long after: the camera again, new story
    for batch in (batch1, batch2, batch3):
        tracker.assign(batch)
    assert [a["incident"] for a in batch1] == [1, 2]
    assert [a["incident"] for a in batch2] == [1, 3]
    assert [a["incident"] for a in batch3] == [4]
    tracker.assign([])
    alert = {**batch2[0], "mac": "00:00:00:00:00:01", "anomaly_score": None, "threshold": None,
             "top_features": [], "message": "m"}
    assert "cn1Label=incident cn1=1" in cef_line(alert, "0.3.0")


def test_score_plot_timeline(trained, site, tmp_path):
    """--plot writes a PNG (atomically, next to the report); the figure has one panel per
    scored device, most alerts first, with exactly that device's scores."""
    import numpy as np

    from flockwatch.serving.plots import timeline_figure
    from flockwatch.serving.score import score_sources

    png = tmp_path / "plots" / "timeline.png"
    r = CliRunner().invoke(app, ["score", str(site / "attacks.pcap"), "--model", str(trained),
                                 "--format", "json", "-o", str(tmp_path / "r.json"),
                                 "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert [p.name for p in png.parent.iterdir()] == ["timeline.png"]  # no partial file left
    rep = score_sources([site / "attacks.pcap"], str(trained))
    fig = timeline_figure(rep.windows, max_devices=3)
    axes = fig.get_axes()
    assert len(axes) == 3
    alerts = rep.windows.group_by("device_id").agg(pl.col("anomalous").sum())
    top = alerts["anomalous"].max()
    first = axes[0].get_ylabel().split("\n")[0]
    assert alerts.filter(pl.col("device_id") == first)["anomalous"][0] == top
    want = rep.windows.filter(pl.col("device_id") == first).sort("start")["anomaly_score"]
    np.testing.assert_allclose(axes[0].get_lines()[0].get_ydata(), want.to_numpy())
    # Nothing scored (every device new): a figure that says so, not an error.
    empty = timeline_figure(rep.windows.with_columns(pl.lit(None, pl.Float64)
                                                     .alias("anomaly_score")))
    assert "no scored windows" in empty.get_axes()[0].texts[0].get_text()


def test_score_real_shared_captures(trained, shared_data, tmp_path):
    caps = [shared_data / "modbus-scada" / "characterization_modbus_6RTU_with_operate.pcap",
            shared_data / "iot-sentinel" / "Aria"]
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["score", *map(str, caps), "--model", str(trained), "--format",
                                 "json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    # Devices the baseline never saw are reported as new devices, not scored against nothing.
    assert doc["devices"] and all(d["new_device"] for d in doc["devices"])
    assert all(d["baseline"] == "new" and d["learning_windows"] is None for d in doc["devices"])
    assert any(a["kind"] == "new_device" for a in doc["alerts"])
    assert all(w["anomaly_score"] is None for w in doc["windows"])


def test_score_without_model_says_how_to_train(tmp_path):
    r = CliRunner().invoke(app, ["score", str(small_pcap(tmp_path / "x.pcap"))])
    assert r.exit_code == 1
    assert "no model registered yet" in r.output and "flockwatch demo" in r.output


def test_score_refuses_model_of_older_feature_set(trained, tmp_path):
    """A model trained on another feature set (e.g. v2, whose host-name words kept MAC
    suffixes) is refused with a one-line error, never fed windows it was not trained on."""
    import pickle
    import shutil

    from flockwatch.features.windows import FEATURE_SET_VERSION

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    pkl = old / "artifacts" / "bundle.pkl"
    bundle = pickle.loads(pkl.read_bytes())
    bundle.info["feature_set_version"] = FEATURE_SET_VERSION - 1
    pkl.write_bytes(pickle.dumps(bundle))
    r = CliRunner().invoke(app, ["score", str(small_pcap(tmp_path / "x.pcap")), "-m", str(old)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert (f"trained on feature set v{FEATURE_SET_VERSION - 1}; this flockwatch computes "
            f"v{FEATURE_SET_VERSION}: retrain it") in r.output


def test_score_rejects_non_flockwatch_model(tmp_path):
    import mlflow

    cap = str(small_pcap(tmp_path / "x.pcap"))

    class Other(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.pyfunc.save_model(str(tmp_path / "other"), python_model=Other())
    r = CliRunner().invoke(app, ["score", cap, "-m", str(tmp_path / "other")])
    assert r.exit_code == 1 and "not a flockwatch model" in r.output
    r = CliRunner().invoke(app, ["score", cap, "-m", "models:/nope/3"])
    assert r.exit_code == 1 and "models:/nope/3" in r.output and "Traceback" not in r.output
    # A local path without a model fails before any capture is read.
    r = CliRunner().invoke(app, ["score", cap, "-m", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no MLflow model here" in r.output and "reading" not in r.output



def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data) if data.strip() else None
    except json.JSONDecodeError:
        return resp.status, data.decode()


@pytest.fixture(scope="module")
def flow_records(site):
    from flockwatch.features import extract
    from flockwatch.features.output import frame_records

    flows = extract([site / "attacks.pcap"]).flows.head(100)
    return frame_records(flows)


def start_server(bundle_path, **kwargs):
    from flockwatch.models.bundle import load_bundle
    from flockwatch.serving.rest import FlockwatchServer

    port = free_port()
    server = FlockwatchServer(load_bundle(bundle_path / "artifacts" / "bundle.pkl"), "127.0.0.1",
                              port, **kwargs)
    server.start_background()
    return server, port


def test_rest_happy_400_413(trained, flow_records):
    server, port = start_server(trained, max_bytes=200_000, model_uri="models:/site@champion",
                                model_version="2")
    try:
        assert request(port, "GET", "/ping")[0] == 200
        # /health names the model in use (issue 17)
        assert request(port, "GET", "/health") == (200, {
            "status": "ok", "model_uri": "models:/site@champion", "model_version": "2",
            "feature_set_version": FEATURE_SET_VERSION})
        body = json.dumps({"dataframe_records": flow_records})
        status, doc = request(port, "POST", "/invocations", body,
                              {"Content-Type": "application/json"})
        assert status == 200
        rows = doc["predictions"]
        assert rows and {"device_id", "anomaly_score", "top_features"} <= set(rows[0])
        split = {"dataframe_split": {"columns": list(flow_records[0]),
                                     "data": [list(r.values()) for r in flow_records]}}
        status2, doc2 = request(port, "POST", "/invocations", json.dumps(split))
        assert status2 == 200 and doc2 == doc
        status, err = request(port, "POST", "/invocations", "{not json")
        assert status == 400 and "malformed JSON" in err["message"]
        bad = [{k: v for k, v in r.items() if k != "src_ip"} for r in flow_records]
        status, err = request(port, "POST", "/invocations", json.dumps(bad))
        assert status == 400 and "src_ip" in err["message"]
        status, err = request(port, "POST", "/invocations", json.dumps({"foo": 1}))
        assert status == 400
        status, err = request(port, "POST", "/invocations", "x" * 300_000)
        assert status == 413 and err["error_code"] == "REQUEST_TOO_LARGE"
        # Still serving after all that.
        assert request(port, "POST", "/invocations", body)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_rest_token(trained, flow_records):
    from flockwatch.models.bundle import load_bundle
    from flockwatch.serving.rest import FlockwatchServer

    with pytest.raises(ValueError, match="needs --token"):
        FlockwatchServer(load_bundle(trained / "artifacts" / "bundle.pkl"), "0.0.0.0", 0)
    server, port = start_server(trained, token="s3cret")
    try:
        assert request(port, "GET", "/ping")[0] == 401
        body = json.dumps(flow_records[:20])
        assert request(port, "POST", "/invocations", body,
                       {"Authorization": "Bearer wrong"})[0] == 401
        assert request(port, "POST", "/invocations", body,
                       {"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_mlflow_models_serve(trained, flow_records):
    """`mlflow models serve -m PATH --env-manager local` serves the model unchanged."""
    mlflow_bin = BIN / "mlflow"
    if not mlflow_bin.exists():
        pytest.skip("mlflow CLI not installed beside this Python")
    port = free_port()
    proc = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", str(trained),
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if request(port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not come up: " + proc.stdout.read(3000))
        status, doc = request(port, "POST", "/invocations",
                              json.dumps({"dataframe_records": flow_records}),
                              {"Content-Type": "application/json"})
        assert status == 200, doc
        rows = doc["predictions"]
        assert rows and "anomaly_score" in rows[0] and "device_type" in rows[0]
        scores = [r["anomaly_score"] for r in rows if r["anomaly_score"] is not None]
        assert np.isfinite(scores).all()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_demo_end_to_end():
    """`flockwatch demo` (what `make demo` runs): synthesize, train, register, score, and every
    injected attack kind is found on its device, with what deviated."""
    from flockwatch.datasets.synth import ATTACK_KINDS

    r = CliRunner().invoke(app, ["demo"])
    assert r.exit_code == 0, r.output
    out = r.output
    for kind in ATTACK_KINDS:
        line = next(x for x in out.splitlines() if f" {kind} " in x and " on " in x)
        assert line.strip().startswith("detected"), line
    assert "deviates from its baseline" in out and "expected" in out
    # The alerts come grouped: the scan's victims are one incident with the scanner.
    n_alerts, n_incidents = map(int, re.search(r"(\d+) alerts in (\d+) incident", out).groups())
    assert len(ATTACK_KINDS) <= n_incidents < n_alerts
    # The table's per-device alert counts add up to the summary's total (every kind counted).
    header = next(x for x in out.splitlines() if x.startswith("┃"))
    col = [c.strip() for c in header.split("┃")].index("alerts")
    rows = [x.split("│") for x in out.splitlines() if x.startswith("│")]
    assert sum(int(r[col]) for r in rows if r[col].strip()) == n_alerts
    assert "no window of it is in the learning period" in out
    assert "other devices talked to" in out
    assert "models:/flockwatch@champion" in out and "mlflow ui --backend-store-uri" in out
    png = Path(next(x for x in out.splitlines() if "Score timeline" in x).split()[-1])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # it ends with the console command, over the report it wrote
    console = next(x for x in out.splitlines() if "in the console" in x).split()
    report = Path(console[console.index("--report") + 1])
    assert json.loads(report.read_text())["incidents"]
