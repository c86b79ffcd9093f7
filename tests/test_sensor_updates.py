"""The sensor's sinks lose no alert while a syslog collector is down, and its model is
swapped for a newly promoted registry version between two windows, without a restart.

Real TCP collectors on 127.0.0.1, a real MLflow registry (SQLite) and real chunks scored by
the sensor's own worker path; the same behaviour against a live interface is in
tests/test_live.py."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, small_pcap

ALERT = {"kind": "anomalous_window", "severity": "high", "device_id": "d", "mac": None,
         "ip": "10.0.0.1", "start": "a", "end": "b", "top_features": [], "message": "m"}


class Collector:
    """A TCP syslog collector on a fixed port: accepts, reads lines, can go away and come back."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self._conns.append(conn)
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *done, buf = buf.split(b"\n")
            self.lines += [d.decode() for d in done]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[str]:
        end = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.lines

    def close(self) -> None:
        for c in self._conns:  # shutdown first: a close alone waits for the blocked recv
            c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.sock.close()
        self._thread.join(timeout=5)



def _alert(i: int) -> dict[str, object]:
    return {**ALERT, "device_id": f"dev-{i}", "message": f"alert {i}"}


def _sent(lines: list[str]) -> list[str]:
    return [ln.rsplit("msg=", 1)[1] for ln in lines]


def _flush_when_due(sink, timeout: float = 40.0) -> None:
    """Flush until the collector takes everything (reconnects back off up to 30 s)."""
    end = time.monotonic() + timeout
    while not sink.flush():
        assert time.monotonic() < end, "buffered alerts never delivered"
        time.sleep(0.1)


def test_tcp_syslog_outage_buffers_and_delivers_everything_in_order() -> None:
    from flockwatch.serving.alerts import SyslogCefSink

    port = free_port()
    sink = SyslogCefSink(f"127.0.0.1:{port}", "tcp")
    for i in range(3):  # nobody listens yet
        sink.send(_alert(i))
    assert (sink.failures, sink.pending, sink.overflow) == (3, 3, 0)
    first = Collector(port)
    _flush_when_due(sink)
    assert _sent(first.wait_for(3)) == ["alert 0", "alert 1", "alert 2"]
    sink.send(_alert(3))  # connected: straight through
    assert _sent(first.wait_for(4))[-1] == "alert 3" and sink.pending == 0
    first.close()  # the collector restarts: its end of the connection is closed
    time.sleep(0.2)
    sink.send(_alert(4))  # noticed before writing into the dead connection
    sink.send(_alert(5))
    assert sink.pending == 2
    second = Collector(port)
    _flush_when_due(sink)
    assert _sent(second.wait_for(2)) == ["alert 4", "alert 5"]
    sink.close()
    second.close()


def test_tcp_syslog_buffer_is_bounded_and_overflow_counted() -> None:
    from flockwatch.serving.alerts import SyslogCefSink

    port = free_port()
    sink = SyslogCefSink(f"127.0.0.1:{port}", "tcp", buffer=3)
    for i in range(5):
        sink.send(_alert(i))
    assert (sink.pending, sink.overflow) == (3, 2)
    coll = Collector(port)
    _flush_when_due(sink)
    assert _sent(coll.wait_for(3)) == ["alert 2", "alert 3", "alert 4"]  # the newest kept
    sink.close()
    coll.close()


def test_jsonl_sink_sync_makes_lines_durable(tmp_path: Path) -> None:
    from flockwatch.serving.alerts import JsonlSink

    sink = JsonlSink(tmp_path / "a.jsonl")
    sink.send(_alert(0))
    sink.sync()
    # another reader (another process after a crash) sees the whole line
    assert json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])["message"] == "alert 0"
    sink.close()


# -- model updates without restart ------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two flockwatch versions of one registered model (the first the champion), a third
    version that is not a flockwatch model, and a capture with a port scan."""
    import mlflow

    from flockwatch.datasets.synth import synthesize_capture
    from flockwatch.features import extract
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.training.baseline import fit_baseline
    from flockwatch.training.tracking import register, start_run

    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    learn = synthesize_capture(tmp / "learn.pcap", hours=0.5, seed=30)
    flows = extract([learn.path]).flows
    for seed in (0, 1):
        model, _ = fit_baseline(flows, window_s=60.0, epochs=5, seed=seed)
        with start_run("sensor-updates", uri, "baseline"):
            register(Bundle(window=WindowSpec(60.0), baseline=model), "site", promote=seed == 0)

    class Other(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with start_run("sensor-updates", uri, "other"):
        mlflow.pyfunc.log_model(name="model", python_model=Other(), registered_model_name="site")
    attack = synthesize_capture(tmp / "attack.pcap", hours=0.25, seed=31, attacks=["port_scan"],
                                first_attack_s=120, attack_duration_s=300)
    return uri, attack.path


def test_promoted_version_is_swapped_in_between_windows(registry, tmp_path, monkeypatch, caplog):
    import mlflow

    from flockwatch.models.store import load_model, promote
    from flockwatch.serving.sensor import Sensor

    uri, attack = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    alias = "models:/site@champion"
    sensor = Sensor("unused0", load_model(alias), alerts_path=tmp_path / "alerts.jsonl",
                    model_uri=alias, model_version="1")
    assert not sensor.check_model()  # the alias still names version 1

    def chunk(k: int, capture: Path) -> Path:  # the worker deletes each chunk once scored
        return Path(shutil.copy(capture, tmp_path / f"chunk-{k}.pcap"))

    from flockwatch.features import extract
    from flockwatch.features.windows import windows

    stranger = small_pcap(tmp_path / "stranger.pcap")  # a device no version has seen

    def n_windows(capture: Path) -> int:  # what scoring the chunk once must give
        return windows(extract([capture]).flows, sensor.spec).height

    sensor._process(chunk(0, stranger))
    promote("models:/site/2")
    assert sensor.check_model()
    assert sensor.counters.model_version == "1"  # loaded, not swapped mid-window
    sensor._process(chunk(1, stranger))
    sensor._process(chunk(2, attack))
    assert (sensor.counters.model_version, sensor.counters.model_swaps) == ("2", 1)
    # no window missed or scored twice across the swap
    assert sensor.counters.windows == 2 * n_windows(stranger) + n_windows(attack)
    sensor.jsonl.close()
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    n0 = next(i for i, a in enumerate(alerts) if a["model_version"] == "2")
    assert n0 > 0 and all(a["model_version"] == "1" for a in alerts[:n0])
    assert all(a["model_version"] == "2" for a in alerts[n0:])
    assert any(a["kind"] == "anomalous_window" for a in alerts[n0:])  # the scan, by version 2
    # What the sensor learnt survives the swap: a device announced once is not new again.
    announced = {a["device_id"] for a in alerts[:n0]}
    assert announced and all(a["kind"] == "new_device" for a in alerts[:n0])
    assert not any(a["device_id"] in announced for a in alerts[n0:])

    # A version that cannot load is refused once, logged, and the running one keeps scoring.
    promote("models:/site/3")
    with caplog.at_level("WARNING", logger="flockwatch.sensor"):
        assert not sensor.check_model()
    assert "model version 3 not loaded, version 2 keeps scoring" in caplog.text
    assert not sensor.check_model() and sensor.counters.model_version == "2"


def test_cef_carries_the_model_version() -> None:
    from flockwatch.serving.alerts import cef_line

    assert "cs5Label=modelVersion cs5=7" in cef_line({**ALERT, "model_version": "7"}, "0.5")
    assert "cs5" not in cef_line(ALERT, "0.5")


def test_backlog_is_bounded_and_what_is_given_up_is_counted(tmp_path, caplog):
    """Scoring that falls behind keeps closed windows on disk up to --max-backlog; beyond it
    the oldest are given up, counted and logged, never silently."""
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model
    from flockwatch.models.store import load_model
    from flockwatch.serving.sensor import Sensor

    save_model(Bundle(window=WindowSpec(10.0)), tmp_path / "model")  # inventory only
    sensor = Sensor("unused0", load_model(str(tmp_path / "model")),
                    alerts_path=tmp_path / "a.jsonl", max_backlog=2)
    chunks = [small_pcap(tmp_path / f"chunk-{k}.pcap") for k in range(5)]
    with caplog.at_level("WARNING", logger="flockwatch.sensor"):
        for c in chunks:  # no worker: nothing is scored
            sensor._enqueue(c)
    c = sensor.counters
    assert (c.backlog, c.windows_dropped) == (2, 3)
    assert [p.exists() for p in chunks] == [False, False, False, True, True]  # oldest gone
    assert caplog.text.count("given up unscored") == 3
    assert "backlog=2" in c.line() and "windows_dropped=3" in c.line()
    sensor._chunks.put(None)
    sensor._worker()  # the two kept are scored, in order, and the lag is reported
    assert c.backlog == 0 and c.behind_s >= 0.0 and not any(p.exists() for p in chunks)
    sensor.jsonl.close()
