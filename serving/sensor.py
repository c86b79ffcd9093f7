"""The live sensor: capture an interface, score each window as it closes, keep an inventory,
send alerts to a JSON-lines file and (optionally) CEF over syslog.

Capture runs in the main thread into one pcap chunk per window (aligned to the clock); a worker
thread meters each closed chunk with NFStream and scores it with the model while the next chunk
fills, so no packet is skipped between windows. SIGTERM/SIGINT close the current chunk early,
score it, flush every sink and exit 0.

With a registry model (``models:/NAME@ALIAS``) and ``refresh_s``, a third thread polls the
alias; a new version is loaded beside the running one and swapped in between two chunks, so
each window is scored once, by one version, and every alert names it (``model_version``).
What the sensor has learnt itself (devices announced as new, incident numbers, product
evidence) is the sensor's, not the model's, and carries over.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.errors import InputError
from flockwatch.features.evidence import EvidenceMemory
from flockwatch.features.findings import MasterMemory
from flockwatch.features.flows import read_capture
from flockwatch.features.live import ProcessCapture, RawCapture
from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.features.windows import WindowSpec
from flockwatch.models.bundle import bundle_of
from flockwatch.serving.alerts import IncidentTracker, JsonlSink, SyslogCefSink
from flockwatch.serving.findings import ReportedFindings
from flockwatch.serving.score import report

log = logging.getLogger("flockwatch.sensor")
#: closed windows kept on disk while scoring catches up (an hour of 1-minute windows)
MAX_BACKLOG = 60
#: how packets are taken off the interface: tcpdump (libpcap's TPACKET_V3 ring) cut into
#: windows by a process of its own, or the AF_PACKET socket read in the sensor's Python, kept
#: for comparison (bench_live.py)
CAPTURES: dict[str, type[RawCapture] | type[ProcessCapture]] = {
    "tcpdump": ProcessCapture, "socket": RawCapture}
_FLOW_KEY = ("src_ip", "dst_ip", "src_port", "dst_port", "protocol")
_APP_COLS = ("application", "application_category")


@dataclass
class Counters:
    packets: int = 0
    flows: int = 0
    windows: int = 0
    alerts: int = 0
    findings: int = 0
    drops: int = 0
    chunks: int = 0
    backlog: int = 0  # closed windows waiting to be scored
    behind_s: float = 0.0  # how long the last window scored had waited
    windows_dropped: int = 0  # closed windows given up, the backlog being full
    syslog_failures: int = 0
    syslog_pending: int = 0
    syslog_overflow: int = 0
    model_version: str | None = None
    model_swaps: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        return (f"packets={self.packets} flows={self.flows} windows={self.windows} "
                f"alerts={self.alerts} findings={self.findings} drops={self.drops} "
                f"backlog={self.backlog} "
                f"behind_s={self.behind_s:.1f} windows_dropped={self.windows_dropped} "
                f"syslog_failures={self.syslog_failures}"
                f" syslog_pending={self.syslog_pending} syslog_overflow={self.syslog_overflow}"
                f" model_version={self.model_version or '-'}")


class Inventory:
    """The sensor's device inventory in SQLite."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("""CREATE TABLE IF NOT EXISTS devices (
            device_id TEXT PRIMARY KEY, mac TEXT, ip TEXT, vendor TEXT, first_seen TEXT,
            last_seen TEXT, device_type TEXT, type_confidence REAL, status TEXT,
            flows INTEGER, bytes INTEGER)""")
        # Identity answers (flockwatch 0.5): added to an inventory an older sensor created.
        # Risk columns (flockwatch 0.6, #14) likewise: an old inventory keeps its rows.
        have = {row[1] for row in self.db.execute("PRAGMA table_info(devices)")}
        for col, kind in self.IDENTITY + self.RISK:
            if col not in have:
                self.db.execute(f"ALTER TABLE devices ADD COLUMN {col} {kind}")
        self.db.commit()

    #: ``vendor`` is the maker identification gives, else the OUI prefix's owner
    #: (``oui_vendor``); ``candidates`` a JSON list of the models the traffic allows.
    IDENTITY = (("category", "TEXT"), ("category_confidence", "REAL"), ("oui_vendor", "TEXT"),
                ("vendor_confidence", "REAL"), ("candidates", "TEXT"))
    #: ``software`` and ``firmware`` JSON lists; ``risk_score`` (0-100) and ``findings`` (the
    #: rules it broke) over every finding the sensor reported for the device.
    RISK = (("software", "TEXT"), ("firmware", "TEXT"), ("risk_score", "INTEGER"),
            ("findings", "INTEGER"))

    def update(self, devices: pl.DataFrame) -> None:
        """Upsert the devices of a scoring report (inventory facts plus type and status)."""
        for r in devices.iter_rows(named=True):
            # The baseline's view when the model has one (learned / thin / new).
            status = r.get("baseline") or ("new" if r.get("new_device") else "known")
            cand = r.get("candidates")
            sw, fw = r.get("software"), r.get("firmware")
            self.db.execute(
                """INSERT INTO devices (device_id, mac, ip, vendor, first_seen, last_seen,
                device_type, type_confidence, status, flows, bytes, category,
                category_confidence, oui_vendor, vendor_confidence, candidates, software,
                firmware, risk_score, findings)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT(device_id) DO UPDATE SET ip=excluded.ip, last_seen=excluded.last_seen,
                device_type=COALESCE(excluded.device_type, device_type),
                type_confidence=COALESCE(excluded.type_confidence, type_confidence),
                vendor=COALESCE(excluded.vendor, vendor),
                category=COALESCE(excluded.category, category),
                category_confidence=COALESCE(excluded.category_confidence, category_confidence),
                vendor_confidence=COALESCE(excluded.vendor_confidence, vendor_confidence),
                candidates=COALESCE(excluded.candidates, candidates),
                software=COALESCE(excluded.software, software),
                firmware=COALESCE(excluded.firmware, firmware),
                risk_score=MAX(COALESCE(excluded.risk_score, 0), COALESCE(risk_score, 0)),
                findings=MAX(COALESCE(excluded.findings, 0), COALESCE(findings, 0)),
                status=excluded.status, flows=flows+excluded.flows, bytes=bytes+excluded.bytes""",
                (r["device_id"], r["mac"], (r["ips"] or [None])[0], r["vendor"],
                 r["first_seen"].isoformat(), r["last_seen"].isoformat(), r.get("device_type"),
                 r.get("type_confidence"), status, r["flows"], r["bytes"], r.get("category"),
                 r.get("category_confidence"), r.get("oui_vendor"), r.get("vendor_confidence"),
                 None if cand is None else json.dumps(list(cand)),
                 json.dumps(list(sw)) if sw else None, json.dumps(list(fw)) if fw else None,
                 r.get("risk_score"), r.get("findings")))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class Sensor:
    def __init__(self, interface: str, model: Any, *, alerts_path: str | Path,
                 syslog: str | None = None, syslog_protocol: str = "udp",
                 inventory_db: str | Path | None = None, window_s: float | None = None,
                 state_every_s: float = 30.0, model_uri: str | None = None,
                 model_version: str | None = None, refresh_s: float = 0.0,
                 max_backlog: int = MAX_BACKLOG, capture: str = "tcpdump") -> None:
        self.interface = interface
        if capture not in CAPTURES:
            raise ValueError(f"capture must be one of {', '.join(CAPTURES)}, got {capture!r}")
        self.capture = capture
        self.bundle = bundle_of(model)
        self.model_uri = model_uri
        self.refresh_s = refresh_s
        self._next_model: tuple[Any, str] | None = None  # (bundle, version), to swap in
        self._refused: set[str] = set()  # versions that failed to load: not tried again
        self._model_lock = threading.Lock()
        self.window_s = float(window_s or self.bundle.window.length_s)
        self.spec = WindowSpec(self.window_s, align="epoch")
        self.jsonl = JsonlSink(alerts_path)
        self.syslog = SyslogCefSink(syslog, syslog_protocol) if syslog else None
        self.inventory = Inventory(inventory_db) if inventory_db else None
        self.state_every_s = state_every_s
        self.counters = Counters(model_version=model_version)
        self.stop = threading.Event()
        # Closed chunks waiting to be scored, with the time each closed: the backlog on disk.
        self._chunks: queue.Queue[tuple[Path, float] | None] = queue.Queue()
        self.max_backlog = max(1, max_backlog)
        self._seen_new: set[str] = set()
        # Product evidence of every device over all chunks so far: identification rests on
        # everything observed, not on the one window where a device did its DHCP exchange.
        self._evidence = EvidenceMemory()
        # Industrial requests over all chunks: a device's fallback master is the host that
        # sent it most of them so far. Findings are reported once per device and rule.
        self._requests = MasterMemory()
        self._reported = ReportedFindings()
        # Alerts of one story share an incident number across chunks (a window's length back).
        self._incidents = IncidentTracker(self.window_s)
        # Application of flows seen in earlier chunks: a TCP session cut at a chunk boundary
        # continues mid-stream, where nDPI cannot name it again.
        self._apps = pl.DataFrame(schema={k: FLOW_SCHEMA[k] for k in (*_FLOW_KEY, *_APP_COLS)})

    # -- model updates (refresher thread) ---------------------------------------------------
    def check_model(self) -> bool:
        """Load the version the alias names now, if it is new; True when one is ready to swap
        in. A version that fails to load (or does not fit the sensor's windows) is logged once
        and the running model keeps scoring."""
        from flockwatch.models.store import (
            ModelLoadError,
            load_model,
            parse_registry_uri,
            resolve_version,
        )

        if not self.model_uri:
            return False
        version = resolve_version(self.model_uri)
        with self._model_lock:
            waiting = self._next_model[1] if self._next_model else None
        if version is None or version in (self.counters.model_version, waiting) \
                or version in self._refused:
            return False
        name = parse_registry_uri(self.model_uri)[0]
        try:
            bundle = bundle_of(load_model(f"models:/{name}/{version}"))
        except ModelLoadError as exc:
            self._refused.add(version)
            log.warning("model version %s not loaded, version %s keeps scoring: %s", version,
                        self.counters.model_version, exc)
            return False
        if bundle.window.length_s != self.window_s:
            self._refused.add(version)
            log.warning("model version %s learnt %g s windows, this sensor scores %g s ones: "
                        "not swapped in (restart the sensor to use it)", version,
                        bundle.window.length_s, self.window_s)
            return False
        with self._model_lock:
            self._next_model = (bundle, version)
        log.info("model version %s loaded; swapping it in at the next window", version)
        return True

    def _swap_model(self) -> None:
        with self._model_lock:
            nxt, self._next_model = self._next_model, None
        if nxt is None:
            return
        old = self.counters.model_version
        self.bundle, self.counters.model_version = nxt
        self.counters.model_swaps += 1
        log.info("model: version %s -> %s (%s)", old, nxt[1], self.model_uri)

    def _refresher(self) -> None:
        while not self.stop.wait(self.refresh_s):
            try:
                self.check_model()
            except Exception:  # never let a registry hiccup end the sensor
                log.exception("model refresh failed")

    # -- processing (worker thread) ---------------------------------------------------------
    def _process(self, chunk: Path) -> None:
        self._swap_model()  # between two windows: each is scored by one version
        try:
            flows, _ = read_capture(chunk)
        except InputError as exc:
            log.warning("chunk %s unreadable: %s", chunk.name, exc)
            return
        finally:
            chunk.unlink(missing_ok=True)
        if flows.height == 0:
            return
        flows = self._carry_applications(flows.with_columns(pl.lit(self.interface).alias("source")))
        rep = report(self.bundle, flows, [], window=self.spec, known_new=self._seen_new,
                     evidence_memory=self._evidence, request_memory=self._requests)
        self._seen_new.update(a["device_id"] for a in rep.alerts if a["kind"] == "new_device")
        self._incidents.assign(rep.alerts)  # across chunks, not report()'s per-chunk ids
        version = self.counters.model_version
        for a in rep.alerts:
            if version is not None:
                a["model_version"] = version
            self.jsonl.send(a)
            if self.syslog:
                self.syslog.send(a)
        fresh = self._reported.fresh(rep.findings)
        for f in fresh:
            if version is not None:
                f["model_version"] = version
            self.jsonl.send(f)
            if self.syslog:
                self.syslog.send(f)
        self.jsonl.sync()  # durable per window
        if self.inventory:
            self.inventory.update(self._reported.risk(rep.devices))
        scored, alerts = rep.windows, rep.alerts
        c = self.counters
        c.flows += flows.height
        c.windows += scored.height
        c.alerts += len(alerts)
        c.findings += len(fresh)

    def _count_syslog(self) -> None:
        if self.syslog:
            self.syslog.flush()  # a collector back since the last window gets what waited
            c = self.counters
            c.syslog_failures, c.syslog_pending = self.syslog.failures, self.syslog.pending
            c.syslog_overflow = self.syslog.overflow

    def _carry_applications(self, flows: pl.DataFrame) -> pl.DataFrame:
        known = flows.filter(pl.col("application") != "Unknown").select(*_FLOW_KEY, *_APP_COLS)
        out = flows.join(self._apps, on=list(_FLOW_KEY), how="left", suffix="_prev").with_columns(
            pl.when((pl.col("application") == "Unknown") & pl.col("application_prev").is_not_null())
            .then(pl.col(f"{c}_prev")).otherwise(pl.col(c)).alias(c) for c in _APP_COLS
        ).select(flows.columns)
        self._apps = pl.concat([self._apps, known]).unique(list(_FLOW_KEY), keep="last").tail(
            100_000)
        return out

    def _enqueue(self, chunk: Path) -> None:
        """Queue a closed chunk for scoring. Scoring that falls behind leaves chunks on disk;
        beyond ``max_backlog`` the oldest is given up, counted and logged, never silently."""
        while self._chunks.qsize() >= self.max_backlog:
            try:
                item = self._chunks.get_nowait()
            except queue.Empty:
                break
            if item is None:  # never drop the end marker
                self._chunks.put(None)
                break
            item[0].unlink(missing_ok=True)
            self.counters.windows_dropped += 1
            log.warning("scoring is %d windows behind: window %s given up unscored "
                        "(%d so far; raise --max-backlog or give the sensor more CPU)",
                        self.max_backlog, item[0].name, self.counters.windows_dropped)
        self._chunks.put((chunk, time.time()))
        self.counters.backlog = self._chunks.qsize()

    def _worker(self) -> None:
        while True:
            item = self._chunks.get()
            if item is None:
                self.counters.backlog = 0
                return
            chunk, closed = item
            self.counters.behind_s = max(0.0, time.time() - closed)
            self.counters.backlog = self._chunks.qsize()
            try:
                self._process(chunk)
            except Exception:  # keep sensing; the failure is logged with its cause
                log.exception("scoring chunk %s failed", chunk.name)
            self._count_syslog()

    # -- capture (main thread) -------------------------------------------------------------
    def _open(self) -> RawCapture | ProcessCapture | None:
        try:
            cap = CAPTURES[self.capture](self.interface)
        except InputError as exc:
            log.warning("%s; retrying in 2 s", exc)
            self.stop.wait(2.0)
            return None
        log.info("capturing on %s", self.interface)  # packets count from here
        return cap

    def run(self, *, max_seconds: float | None = None) -> Counters:
        worker = threading.Thread(target=self._worker, name="scorer", daemon=True)
        worker.start()
        if self.refresh_s > 0 and self.model_uri and self.model_uri.startswith("models:/"):
            threading.Thread(target=self._refresher, name="model-refresh", daemon=True).start()
        end = time.monotonic() + max_seconds if max_seconds else None
        last_state = time.monotonic()
        cap: RawCapture | ProcessCapture | None = None
        log.info("sensing %s (%s): %g s windows, alerts -> %s%s", self.interface, self.capture,
                 self.window_s,
                 self.jsonl.path, f", CEF -> {self.syslog.addr}" if self.syslog else "")
        with tempfile.TemporaryDirectory(prefix="flockwatch-sensor-") as tmp:
            k = 0
            while not self.stop.is_set() and (end is None or time.monotonic() < end):
                if cap is None:
                    cap = self._open()
                    continue
                now = time.time()
                boundary = (now // self.window_s + 1) * self.window_s
                deadline = time.monotonic() + (boundary - now)
                if end is not None:
                    deadline = min(deadline, end)
                chunk = Path(tmp) / f"chunk-{k:06d}.pcap"
                k += 1
                try:
                    cap.capture_until(chunk, deadline, self.stop.is_set)
                except OSError as exc:  # interface went away
                    log.warning("capture on %s failed (%s); retrying", self.interface, exc)
                    cap.close()
                    cap = None
                    self._enqueue(chunk)
                    continue
                self.counters.packets = cap.packets
                self.counters.drops = cap.dropped
                self.counters.chunks += 1
                self._enqueue(chunk)
                if time.monotonic() - last_state >= self.state_every_s:
                    log.info("state: %s", self.counters.line())
                    last_state = time.monotonic()
            if cap is not None:
                cap.close()
            self._chunks.put(None)
            worker.join()
        self.jsonl.close()
        if self.syslog:
            self.syslog.close()
            self._count_syslog()
            if self.syslog.pending:
                log.warning("syslog %s:%s unreachable at exit: %d alert(s) not delivered "
                            "(all are in %s)", *self.syslog.addr, self.syslog.pending,
                            self.jsonl.path)
        if self.inventory:
            self.inventory.close()
        log.info("stopped: %s", self.counters.line())
        return self.counters


def run_sensor(interface: str, model: Any, **kwargs: Any) -> Counters:
    """Run until SIGTERM/SIGINT (or ``max_seconds``)."""
    max_seconds = kwargs.pop("max_seconds", None)
    sensor = Sensor(interface, model, **kwargs)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping, flushing", signum)
        sensor.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return sensor.run(max_seconds=max_seconds)
