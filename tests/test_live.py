"""Live capture on a veth pair in a network namespace, fed by tcpreplay (needs root)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.live
BIN = Path(sys.executable).parent
KEY = ["src_ip", "dst_ip", "src_port", "dst_port", "protocol"]


@pytest.fixture
def veth():
    from flockwatch.features.live import ReplayLinkError, replay_link

    if not all(shutil.which(t) for t in ("tcpreplay", "tcpdump", "ip")):
        pytest.skip("live tests need tcpreplay, tcpdump and iproute2 (apt-get install "
                    "tcpreplay tcpdump)")
    try:
        with replay_link() as link:
            yield link
    except ReplayLinkError as exc:
        pytest.skip(f"live tests: {exc}")


def replay(ns: str, ns_if: str, pcap: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-q", *extra, "-i", ns_if,
                           str(pcap)], capture_output=True, text=True, check=True)


def test_live_extract_matches_file(veth, tmp_path):
    from conftest import data_dir

    from flockwatch.datasets.synth import synthesize_capture
    from flockwatch.features import extract

    shared = data_dir() / "iot-sentinel" / "Aria" / "Setup-A-1-STA.pcap"
    pcap = shared if shared.exists() else synthesize_capture(
        tmp_path / "s.pcap", hours=0.01, seed=3).path
    ns, host_if, ns_if = veth
    out = tmp_path / "live.parquet"
    proc = subprocess.Popen([str(BIN / "flockwatch"), "extract", "--interface", host_if,
                             "--duration", "6", "-o", str(out)], stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    replay(ns, ns_if, pcap, "--mbps", "50")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    live = pl.read_parquet(out)
    file = extract([pcap]).flows
    assert live.height > 0
    assert set(live.select(KEY).rows()) == set(file.select(KEY).rows())
    assert live["packets"].sum() == file["packets"].sum()


class Sense:
    """`flockwatch sense` as a subprocess: its stderr read as it comes; ``started()`` waits
    until it captures (start-up takes seconds: imports, the model, the capture process)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(BIN / "flockwatch"), "sense", *args],
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr or ()),
                                        daemon=True)
        self._reader.start()

    def started(self, timeout: float = 120.0) -> None:
        end = time.time() + timeout
        while not any("capturing on" in ln for ln in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.time() < end, "sense did not start capturing"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return "".join(self.lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


class UdpListener:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.lines.append(data.decode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def live_model(tmp_path_factory):
    """A baseline with 10 s windows learnt from an hour of the synthetic site."""
    from flockwatch.datasets.synth import synthesize_capture
    from flockwatch.features import extract
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline

    tmp = tmp_path_factory.mktemp("live-model")
    learn = synthesize_capture(tmp / "learn.pcap", hours=1.0, seed=20)
    model, _ = fit_baseline(extract([learn.path]).flows, window_s=10.0, epochs=30)
    save_model(Bundle(window=WindowSpec(10.0), baseline=model), tmp / "model")
    attack = synthesize_capture(tmp / "attack.pcap", hours=70 / 3600, seed=21,
                                attacks=["port_scan"], first_attack_s=25, attack_duration_s=30)
    return tmp / "model", attack.path


@pytest.mark.slow
def test_sensor_alerts_on_replayed_attack(veth, tmp_path, live_model):
    from flockwatch.datasets.synth import host

    window = 10.0
    model_path, attack_path = live_model
    scanner = host("camera-1").mac
    ns, host_if, ns_if = veth
    alerts = tmp_path / "alerts.jsonl"
    listener = UdpListener()
    sense = Sense("-i", host_if, "--model", str(model_path),
                  "--alerts", str(alerts), "--syslog", f"127.0.0.1:{listener.port}",
                  "--inventory-db", str(tmp_path / "inv.sqlite"), "--state-every", "5")
    proc = sense.proc
    try:
        sense.started()
        t_replay = time.time()
        seen_at = None
        rp = threading.Thread(target=replay, args=(ns, ns_if, attack_path), daemon=True)
        rp.start()
        deadline = time.time() + 90
        while time.time() < deadline and seen_at is None:
            if alerts.exists():
                for line in alerts.read_text().splitlines():
                    a = json.loads(line)
                    if a["mac"] == scanner and a["kind"] == "anomalous_window":
                        seen_at = time.time()
            time.sleep(0.2)
        rp.join(timeout=120)
    finally:
        err = sense.stop()
        listener.close()
    assert proc.returncode == 0, err
    assert "stopped: packets=" in err and "drops=0" in err
    assert seen_at is not None, "no alert for the scanning camera"
    # Scan packets start 25 s into the replay; the alert is due within a window plus 5 s.
    assert seen_at - (t_replay + 25.0) <= window + 5.0
    cef = [ln for ln in listener.lines if "CEF:0|flockwatch|flockwatch|" in ln]
    assert any(f"smac={scanner}" in ln and "|anomalous_window|" in ln for ln in cef)
    # Every alert carries its incident number, in the file and in CEF (risk findings share
    # the file and the collector, signature IDs 401-406, and have none).
    from flockwatch.serving.findings import FINDING_SIGNATURES

    sent = [a for line in alerts.read_text().splitlines()
            if (a := json.loads(line))["kind"] not in FINDING_SIGNATURES]
    assert sent and all(isinstance(a["incident"], int) and a["incident"] >= 1 for a in sent)
    finding_ids = tuple(f"|{n}|" for n in FINDING_SIGNATURES.values())
    assert all("cn1Label=incident cn1=" in ln for ln in cef
               if not any(x in ln for x in finding_ids))
    import sqlite3

    rows = dict(sqlite3.connect(tmp_path / "inv.sqlite").execute(
        "select device_id, status from devices").fetchall())
    assert scanner in rows
    assert set(rows.values()) <= {"learned", "thin", "new"}


@pytest.mark.slow
def test_sensor_survives_lost_interface_and_dead_syslog(veth, tmp_path, live_model):
    """Syslog target down: alerts still reach the file. Interface gone: logged, retried, and
    SIGTERM still exits 0."""
    model_path, attack_path = live_model
    ns, host_if, ns_if = veth
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()  # nothing listens there
    alerts = tmp_path / "alerts.jsonl"
    sense = Sense("-i", host_if, "--model", str(model_path),
                  "--alerts", str(alerts), "--syslog", f"127.0.0.1:{closed_port}",
                  "--syslog-protocol", "tcp", "--window", "5s", "--state-every", "2")
    proc = sense.proc
    try:
        sense.started()
        replay(ns, ns_if, attack_path, "--multiplier", "8")
        deadline = time.time() + 40
        while time.time() < deadline and not (alerts.exists() and alerts.read_text().strip()):
            time.sleep(0.5)
        assert alerts.exists() and alerts.read_text().strip(), "no alert written"
        subprocess.run(["ip", "link", "del", host_if], check=True, capture_output=True)
        time.sleep(5.0)
        assert proc.poll() is None, "the sensor died when its interface went away"
    finally:
        err = sense.stop()
    assert proc.returncode == 0, err
    assert "no such network interface" in err and "retrying" in err
    assert "syslog_failures=" in err and "syslog_failures=0" not in err.splitlines()[-1]
    assert "Traceback" not in err


@pytest.mark.slow
def test_sensor_swaps_promoted_model_and_survives_syslog_outage(veth, tmp_path, live_model):
    """While `sense` runs: a newly promoted version is swapped in without a restart (later
    alerts name it), and the TCP syslog collector goes away and comes back: every alert in
    the file reaches it, in order."""
    from conftest import free_port
    from test_sensor_updates import Collector

    from flockwatch.models.bundle import load_bundle
    from flockwatch.models.store import promote
    from flockwatch.training.tracking import register, start_run

    model_path, attack_path = live_model
    bundle = load_bundle(model_path / "artifacts" / "bundle.pkl")
    for v in (1, 2):
        with start_run("live", None, f"v{v}"):
            register(bundle, "live", promote=v == 1)
    port = free_port()
    collector = Collector(port)
    ns, host_if, ns_if = veth
    alerts = tmp_path / "alerts.jsonl"
    sense = Sense("-i", host_if, "--model", "models:/live@champion",
                  "--model-refresh", "1s", "--alerts", str(alerts), "--syslog", f"127.0.0.1:{port}",
                  "--syslog-protocol", "tcp", "--state-every", "2")
    proc = sense.proc

    def lines() -> list[dict]:
        return [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []

    def wait(cond, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while not cond() and time.time() < end:
            time.sleep(0.3)

    try:
        sense.started()
        replay(ns, ns_if, attack_path, "--multiplier", "4")
        wait(lambda: any(a["kind"] == "anomalous_window" for a in lines()))
        n1 = len(lines())
        assert n1 and all(a["model_version"] == "1" for a in lines())
        collector.close()  # the collector goes away ...
        promote("models:/live/2")  # ... and a new version is promoted meanwhile
        # the refresher polls every second and loads version 2 (seconds on a loaded
        # machine); it is swapped in before the next window is scored
        wait(lambda: any("model version 2 loaded" in ln for ln in sense.lines), timeout=90.0)
        # the first replay's last windows may still be scored by version 1 (CI once saw one
        # after n1): wait until its alerts stop coming, then count from there
        began = quiet = time.time()
        n2 = len(lines())
        while time.time() - quiet < 4.0 and time.time() - began < 60.0:
            time.sleep(0.5)
            if len(lines()) != n2:
                quiet, n2 = time.time(), len(lines())
        replay(ns, ns_if, attack_path, "--multiplier", "4")
        wait(lambda: any(a["kind"] == "anomalous_window" for a in lines()[n2:]))
        assert lines()[n2:] and all(a["model_version"] == "2" for a in lines()[n2:])
        back = Collector(port)  # ... and comes back: what waited is delivered
        total = len(lines())
        wait(lambda: len(collector.lines) + len(back.lines) >= total, timeout=90.0)
    finally:
        err = sense.stop()
    assert proc.returncode == 0, err
    assert "model: version 1 -> 2 (models:/live@champion)" in err
    sent = lines()
    received = [ln for ln in collector.lines + back.lines if "CEF:0|flockwatch|" in ln]
    assert len(received) == len(sent), (len(received), len(sent))
    unescaped = [ln.rsplit("msg=", 1)[1].replace("\\=", "=").replace("\\\\", "\\")
                 for ln in received]
    assert unescaped == [a["message"].replace("\n", " ") for a in sent]
    assert all(f"cs5Label=modelVersion cs5={a['model_version']}" in ln
               for ln, a in zip(received, sent, strict=True))
    back.close()


@pytest.mark.slow
def test_sensor_killed_loses_at_most_the_open_window(veth, tmp_path, live_model):
    """kill -9 between windows: every alert of the windows scored before it is in the file,
    as whole JSON lines (written and synced per window)."""
    import re

    model_path, attack_path = live_model
    ns, host_if, ns_if = veth
    alerts = tmp_path / "alerts.jsonl"
    sense = Sense("-i", host_if, "--model", str(model_path),
                  "--alerts", str(alerts), "--state-every", "1")
    try:
        sense.started()
        replay(ns, ns_if, attack_path, "--multiplier", "4")
        end = time.time() + 60
        logged = 0
        while time.time() < end and not logged:
            counts = [int(m[1]) for ln in list(sense.lines)
                      if (m := re.search(r"state: .* alerts=(\d+)", ln))]
            logged = max(counts, default=0)
            time.sleep(0.3)
        assert logged, "no window with alerts was scored"
    finally:
        sense.stop(signal.SIGKILL)
    text = alerts.read_text()
    assert text.endswith("\n")
    written = [json.loads(x) for x in text.splitlines()]  # no half-written line
    assert len(written) >= logged


@pytest.mark.slow
def test_soak_script_runs_short(veth, tmp_path, shared_data):
    """experiments/soak_sensor.py in a 20 s run: rounds replayed, each alerted, memory
    sampled, every counted alert written. Its background traffic is built from the shared
    captures: without them the test skips (it failed before)."""
    out = tmp_path / "soak.json"
    from conftest import REPO

    p = subprocess.run([sys.executable, str(REPO / "experiments" / "soak_sensor.py"),
                        "--duration", "20s", "--warm-up", "5s", "--sample-every", "2",
                        "--packets", "20000", "--output", str(out),
                        "--data", str(shared_data)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["rounds"] >= 1 and res["lost_alerts"] == 0
    assert res["alerts_written"] == res["alerts_counted"] > 0
    assert res["rss_samples"] and res["rss_mb_max"] > 0 and res["sensor_exit"] == 0
