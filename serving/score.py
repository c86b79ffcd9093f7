"""Scoring captures with the flockwatch model: inventory, windows, alerts."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.attribution import attribute, attribution_context
from flockwatch.features.evidence import device_evidence, merge_evidence
from flockwatch.features.explain import window_tokens
from flockwatch.features.findings import evidence as risk_evidence
from flockwatch.features.findings import industrial_requests, merge_requests, summarise
from flockwatch.features.flows import ExtractResult, Problem, expand_sources, extract
from flockwatch.features.hashing import file_hash
from flockwatch.features.inventory import RISK_COLUMNS, inventory, merge_inventories, with_risk
from flockwatch.features.output import ISO_UTC, frame_records, iso_utc, to_json
from flockwatch.features.software import SOFTWARE_SCHEMA, device_software
from flockwatch.features.windows import (
    KEY_COLUMNS,
    WindowSpec,
    add_industrial,
    assign_windows,
    parse_duration,
    window_features,
    window_origins,
)
from flockwatch.models.bundle import bundle_of
from flockwatch.models.classifier import TYPE_EVIDENCE
from flockwatch.models.deviations import explain_windows
from flockwatch.models.scoring import learning_flag, score_windows
from flockwatch.models.store import configure, load_model
from flockwatch.serving.alerts import alerts_from, incidents
from flockwatch.serving.contract import (
    SCHEMA_VERSION,
    Alert,
    AlertFlow,
    DeviceIdentity,
    Finding,
    Incident,
    TypeEvidence,
    Vulnerability,
    json_schema,
)
from flockwatch.serving.findings import finding_dicts
from flockwatch.serving.vulns import with_vulnerabilities

_TOP_DTYPE = pl.List(pl.Struct({"feature": pl.String, "observed": pl.Float64,
                                "expected": pl.Float64, "share": pl.Float64}))


@dataclass
class ScoreReport:
    devices: pl.DataFrame
    windows: pl.DataFrame
    alerts: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)
    model_uri: str = ""
    #: alerts grouped into incidents (``serving.alerts.incidents``)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    #: the learning period of the scored captures the baseline learnt from (``start``,
    #: ``end``, ``sources``, ``windows`` marked learning, ``alerts``: whether alerts were
    #: raised there), or None when no scored window is in it
    learning: dict[str, Any] | None = None
    #: the time range asked for (``--since``/``--until``), ISO times or None
    since: str | None = None
    until: str | None = None
    #: risk findings (``contract.Finding`` dicts), most severe first
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: known vulnerabilities of the devices' software (filled where a CVE database is given)
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    #: the software each device showed (``features.software.device_software`` rows): what
    #: the devices' ``software``/``firmware`` list, and what vulnerabilities are matched on
    software: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SOFTWARE_SCHEMA))

    def to_json(self) -> str:
        """The report as JSON text: indented, one scored window a line (windows are most of a
        report, and are encoded column-wise rather than object by object)."""
        mark = "\u0000windows\u0000"
        text = to_json(self._document(mark), indent=2)
        return text.replace(json.dumps(mark), windows_json(self.windows, indent="    "), 1)

    def _document(self, windows: Any) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model_uri,
            "since": self.since,
            "until": self.until,
            "learning": self.learning,
            "devices": frame_records(self.devices),
            "windows": windows,
            "alerts": self.alerts,
            "incidents": self.incidents,
            "findings": self.findings,
            "vulnerabilities": self.vulnerabilities,
            "problems": [{"input": p.source, "severity": p.severity, "message": p.message}
                         for p in self.problems],
        }


def windows_json(windows: pl.DataFrame, indent: str = "") -> str:
    """Scored windows (``score_flows`` output) as a JSON array, ``top_features`` as objects,
    encoded column-wise; with ``indent``, one window a line."""
    if windows.height == 0:
        return "[]"
    w = windows.with_columns(
        pl.col(c).dt.strftime(ISO_UTC)
        for c, t in windows.schema.items() if isinstance(t, pl.Datetime)
    ).with_columns(pl.col("top_features").str.json_decode(_TOP_DTYPE),
                   pl.col("candidates").str.json_decode(pl.List(pl.String)))
    lines = w.write_ndjson().splitlines()
    if not indent:
        return "[" + ",".join(lines) + "]"
    return "[\n" + ",\n".join(indent + x for x in lines) + "\n" + indent[:-2] + "]"


def learnt_sources(bundle: Any, files: Iterable[str]) -> set[str]:
    """The files among ``files`` that are captures the model's baseline learnt from, known by
    content hash (``Bundle.learning``), whatever their name or path now. Only files of a
    learnt capture's size are hashed; models without a learning record learnt from none."""
    rec = getattr(bundle, "learning", None)
    if not rec or not rec.get("captures"):
        return set()
    hashes = {c["sha256"] for c in rec["captures"]}
    sizes = {c.get("bytes") for c in rec["captures"]}
    out = set()
    for f in files:
        path = Path(f)
        try:
            if path.is_file() and (None in sizes or path.stat().st_size in sizes) \
                    and file_hash(path) in hashes:
                out.add(f)
        except OSError:  # unreadable: extraction reports it
            continue
    return out


#: A ``--since``/``--until`` bound: a time, or seconds after the input's first flow.
TimeBound = dt.datetime | float


def parse_time_bound(text: str | None, option: str = "--since") -> TimeBound | None:
    """``2026-03-02T08:00``, ``2026-03-02`` (ISO-8601; UTC unless it names a zone) -> a time;
    ``3d``, ``36h``, ``90m`` -> that long after the first flow of the input (as
    ``--learning-period`` counts, so ``--since 3d`` starts where ``--learning-period 3d``
    ended)."""
    if text is None or not text.strip():
        return None
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r}: give an ISO time (2026-03-02T08:00, UTC unless "
                         "it names a zone) or a duration after the input's start (3d, 36h, "
                         "90m)") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def resolve_bound(bound: TimeBound | None, start: dt.datetime | None) -> dt.datetime | None:
    if bound is None or isinstance(bound, dt.datetime):
        return bound
    return None if start is None else start + dt.timedelta(seconds=bound)


def score_sources(sources: Sequence[str | os.PathLike[str]], model_uri: str | None = None, *,
                  model: Any = None, tracking_uri: str | None = None,
                  on_file: Callable[[str], None] | None = None,
                  read: Callable[[Sequence[str | os.PathLike[str]]], ExtractResult] | None = None,
                  on_load_error: Callable[[BaseException], None] | None = None,
                  on_read: Callable[[ExtractResult], None] | None = None,
                  include_learning: bool = False, since: TimeBound | None = None,
                  until: TimeBound | None = None,
                  vulns_db: str | os.PathLike[str] | None = None) -> ScoreReport:
    """Extract, score and summarise captures, folders or Zeek logs.

    Without ``model``, the model loads while the captures are read (MLflow, LightGBM and torch
    imports included: both take seconds, and NFStream's metering runs in its own processes),
    and the captures it learnt from are found by content hash meanwhile. ``tracking_uri``:
    point MLflow there first (in the loader; None keeps the store as configured). ``read``
    replaces ``extract`` (the CLI's reads with a progress bar). Once both are done, a failed
    load goes to ``on_load_error`` (default: raised), then ``on_read`` sees what was read,
    before any scoring (the CLI stops there when nothing could be read).
    """
    loader = _Loader(sources, model_uri, model=model, tracking_uri=tracking_uri)
    result = (read or (lambda srcs: extract(srcs, on_file=on_file)))(sources)
    try:
        model, learnt = loader.result()
    except Exception as exc:
        if on_load_error is None:
            raise
        on_load_error(exc)
        raise
    if on_read is not None:
        on_read(result)
    return report(bundle_of(model), result.flows, result.problems, model_uri or "",
                  learning_sources=learnt, include_learning=include_learning,
                  since=since, until=until, vulns_db=vulns_db)


class _Loader:
    """The model (unless given), the captures among ``sources`` it learnt from, the scoring
    imports and the MAC vendor table, loaded in a thread; ``result`` waits for them."""

    def __init__(self, sources: Sequence[str | os.PathLike[str]], model_uri: str | None, *,
                 model: Any = None, tracking_uri: str | None = None) -> None:
        import threading

        self._sources, self._uri, self._tracking_uri = sources, model_uri, tracking_uri
        self._model: Any = model
        self._learnt: set[str] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            if self._model is None:
                if self._tracking_uri is not None:
                    configure(self._tracking_uri)
                self._model = load_model(self._uri)
            files, _ = expand_sources(self._sources)
            self._learnt = learnt_sources(bundle_of(self._model), files)
            from flockwatch.features.oui import preload

            preload()
        except Exception as exc:  # noqa: BLE001 - raised on the caller's thread by result()
            self._error = exc

    def result(self) -> tuple[Any, set[str]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._model, self._learnt


ALERT_KINDS = ("anomalous_window", "new_peer", "new_device")
#: Per-device alert counts in ``ScoreReport.devices``: the total, then one per kind.
ALERT_COUNT_COLUMNS = ["alerts", *(f"alerts_{k}" for k in ALERT_KINDS)]


def alert_counts(alerts: list[dict[str, Any]]) -> pl.DataFrame:
    """``device_id`` and ``ALERT_COUNT_COLUMNS``, one row per device with alerts."""
    total = Counter(a["device_id"] for a in alerts)
    kind = Counter((a["device_id"], a["kind"]) for a in alerts)
    devs = sorted(total)
    return pl.DataFrame({
        "device_id": pl.Series(devs, dtype=pl.String),
        "alerts": pl.Series([total[d] for d in devs], dtype=pl.Int64),
        **{f"alerts_{k}": pl.Series([kind[d, k] for d in devs], dtype=pl.Int64)
           for k in ALERT_KINDS},
    })


#: Flows scored at a time: ``report`` cuts its input at window boundaries into parts of about
#: this many flows, so that attribution's and the window features' intermediate tables (several
#: times the flows' size) are a part's, not the whole input's. None or 0: one part.
SEGMENT_FLOWS = 25_000


def report(bundle: Any, flows: pl.DataFrame, problems: list[Problem], model_uri: str = "", *,
           window: WindowSpec | None = None, known_new: set[str] | None = None,
           learning_sources: Collection[str] = (), include_learning: bool = False,
           since: TimeBound | None = None, until: TimeBound | None = None,
           evidence_memory: Any | None = None, request_memory: Any | None = None,
           segment_flows: int | None = SEGMENT_FLOWS,
           vulns_db: str | os.PathLike[str] | None = None) -> ScoreReport:
    """Score flows into the inventory, the scored windows and the alerts.

    The devices' software is matched against the CVE database at ``vulns_db`` (default
    ``serving.vulns.default_db()``; none there: no vulnerabilities, as without one).

    ``window`` overrides the bundle's window alignment; ``known_new`` lists devices already
    reported as new (the sensor reports each once). Windows of ``learning_sources`` (captures
    the baseline learnt from: ``learnt_sources``) inside the learning period are marked
    ``learning`` and raise no alert unless ``include_learning``. ``since``/``until`` keep the
    windows that overlap that range (``parse_time_bound``); windows are cut as for the whole
    input, so a window scores the same with or without a range.

    The flows are scored in parts of about ``segment_flows`` flows cut at window boundaries
    (``score_parts``); the report is the same for any part size. ``request_memory``
    (``features.findings.MasterMemory``) adds the industrial requests of earlier calls to the
    input's, for the masters of devices the baseline did not learn (the live sensor).
    """
    t0 = flows["first_seen"].min() if flows.height else None
    lo = resolve_bound(since, t0)  # type: ignore[arg-type]
    hi = resolve_bound(until, t0)  # type: ignore[arg-type]
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"--since {iso_utc(lo)} is not before --until {iso_utc(hi)}")
    # The whole input is scored, so the classifier's windows and device decisions are those of
    # the whole input; the range then selects windows, flows and the inventory.
    parts = score_parts(bundle, flows, window=window, learning_sources=learning_sources,
                        evidence_memory=evidence_memory, since=lo, until=hi,
                        segment_flows=segment_flows)
    scored, inv, peers = parts.scored, parts.inventory, parts.new_peers
    # Alerts come from the operational windows only, unless asked otherwise.
    alerting = scored
    if not include_learning:
        alerting = scored.filter(~pl.col("learning"))
        if peers is not None:
            peers = peers.filter(~learning_flag(bundle, learning_sources))
    per_dev = scored.sort("start").group_by("device_id").agg(
        pl.col("device_type").last(), pl.col("type_confidence").last(),
        pl.col("unknown").last(), pl.col("nearest_type").last(),
        pl.col("category").last(), pl.col("category_confidence").last(),
        pl.col("vendor").last().alias("_identified_vendor"),
        pl.col("vendor_confidence").last(),
        pl.col("candidates").last().str.json_decode(pl.List(pl.String)),
        pl.col("new_device").any(),
        pl.len().alias("windows"), pl.col("anomalous").fill_null(False).sum()
        .alias("anomalous_windows"),
    )
    # ``vendor``: the maker identification gives (from evidence and behaviour), else the OUI
    # prefix's owner; ``oui_vendor`` is always the prefix's owner (a module or chip maker's
    # prefix, such as Espressif's, may not be the brand).
    devices = inv.rename({"vendor": "oui_vendor"}).join(per_dev, on="device_id", how="left")
    devices = devices.with_columns(
        pl.coalesce("_identified_vendor", "oui_vendor").alias("vendor")).drop(
        "_identified_vendor")
    if getattr(bundle, "baseline", None) is not None:
        n, state = bundle.baseline.learning_status(devices["device_id"].to_list())
    else:
        n, state = [None] * devices.height, [None] * devices.height
    devices = devices.with_columns(pl.Series("learning_windows", n, dtype=pl.Int64),
                                   pl.Series("baseline", state, dtype=pl.String))
    alerts = alerts_from(alerting, known_new, new_peers=peers,
                         window_peers=top_peers(alerting, parts.peer_counts))
    flows_behind(alerts, flows, parts.context, window or bundle.window, parts.origins)
    if parts.type_evidence is not None:
        devices = devices.join(parts.type_evidence.unique("device_id", keep="first").drop(
            "source"), on="device_id", how="left")
    else:
        devices = devices.with_columns(pl.lit(None, dtype=TYPE_EVIDENCE).alias("type_evidence"))
    devices = devices.with_columns(pl.col("type_evidence").fill_null([]))
    grouped = incidents(alerts)
    for inc in grouped:
        for i in inc["alerts"]:
            alerts[i]["incident"] = inc["id"]
    devices = devices.join(alert_counts(alerts), on="device_id", how="left").with_columns(
        pl.col(ALERT_COUNT_COLUMNS).fill_null(0))
    devices = devices.join(device_peers(parts.peer_counts), on="device_id",
                           how="left").with_columns(pl.col("local_peers").fill_null([]))
    # Findings: industrial writes against the masters the baseline learnt, where it did.
    requests = parts.requests if request_memory is None else request_memory.update(
        parts.requests)
    found = summarise(parts.risks, requests, getattr(bundle, "masters", None))
    devices = with_risk(devices, found, parts.software)
    devices, vulns = with_vulnerabilities(devices, parts.software, vulns_db)
    return ScoreReport(devices, scored, alerts, problems, model_uri, grouped,
                       learning=_learning_summary(bundle, scored, include_learning),
                       since=None if lo is None else iso_utc(lo),
                       until=None if hi is None else iso_utc(hi),
                       findings=finding_dicts(found), software=parts.software,
                       vulnerabilities=vulns)


#: Flows listed per alert: its device's flows in its window, the ones to new peers first,
#: then by bytes.
ALERT_FLOWS = 10


def flows_behind(alerts: list[dict[str, Any]], flows: pl.DataFrame, context: Any,
                 spec: WindowSpec, origins: pl.DataFrame | None, limit: int = ALERT_FLOWS
                 ) -> None:
    """Give each alert ``flows``: up to ``limit`` of its device's flows in its window (a
    new-peer alert's flows to those peers first, then the heaviest), so that an analyst sees
    the traffic behind it, not only its features. Only the flows of alerting windows are
    attributed again, with the decisions taken over the whole input (``context``)."""
    wanted = [(i, a) for i, a in enumerate(alerts) if a.get("start")]
    if not wanted or flows.height == 0:
        return
    utc = pl.Datetime("ms", "UTC")
    keys = pl.DataFrame({
        "_alert": [i for i, _ in wanted],
        "device_id": [a["device_id"] for _, a in wanted],
        "start": pl.Series([a["start"] for _, a in wanted]).str.to_datetime(
            time_zone="UTC").cast(utc),
    })
    # a flow's window depends on its time and source only: keep the alerting windows' flows
    # before attributing anything
    timed = assign_windows(flows, spec, origins)
    timed = timed.join(keys.select("start").unique(), on="start", how="semi")
    if timed.height == 0:
        return
    att = attribute(timed.drop("start", "end"), context)
    att = assign_windows(att, spec, origins)
    rows = att.join(keys, on=["device_id", "start"])
    if rows.height == 0:
        return
    new = pl.DataFrame([(i, p) for i, a in wanted for p in a.get("new_peers") or ()],
                       schema={"_alert": pl.Int64, "_peer": pl.String}, orient="row")
    rows = rows.with_columns(
        (pl.col("peer_ip") + ":" + pl.col("peer_port").cast(pl.String)).alias("_peer")
    ).join(new.with_columns(pl.lit(True).alias("_new")), on=["_alert", "_peer"], how="left")
    rows = rows.with_columns(pl.col("_new").fill_null(False))
    # an anomalous window's flows that show what deviated (the port, application or
    # category of a top feature, an unanswered attempt, a never-seen name) come first
    hit = [pl.lit(False)]
    for i, a in wanted:
        match = _shows(a.get("top_features") or [])
        if match is not None:
            hit.append((pl.col("_alert") == i) & match)
    rows = rows.with_columns((pl.col("_new") | pl.any_horizontal(hit).fill_null(False))
                             .alias("_new"))
    rows = rows.sort(["_alert", "_new", "bytes", "first_seen"],
                     descending=[False, True, True, False])
    top = rows.group_by("_alert", maintain_order=True).head(limit)
    for r in top.iter_rows(named=True):
        alerts[r["_alert"]].setdefault("flows", []).append(AlertFlow(
            first_seen=iso_utc(r["first_seen"]), last_seen=iso_utc(r["last_seen"]),
            src_ip=r["src_ip"], src_port=r["src_port"], dst_ip=r["dst_ip"],
            dst_port=r["dst_port"], protocol=r["protocol"], application=r["application"],
            packets=r["packets"], bytes=r["bytes"]).to_dict())


def _shows(top: list[dict[str, Any]]) -> pl.Expr | None:
    """Which of a window's flows show its top deviating features, as far as a flow can."""
    from flockwatch.features.windows import SERVICE_PORTS

    master = pl.col("application").fill_null("Unknown").str.split(".").list.first()
    port = pl.col("dst_port").fill_null(0)
    out: list[pl.Expr] = []
    for t in top[:3]:
        f = str(t.get("feature", ""))
        if f.startswith("port_") and f.endswith("_share") and f[5:-6].isdigit():
            out.append(port == int(f[5:-6]))
        elif f == "port_other_low_share":
            out.append(~port.is_in(SERVICE_PORTS) & (port < 1024))
        elif f == "port_other_high_share":
            out.append(~port.is_in(SERVICE_PORTS) & (port >= 1024))
        elif f.startswith("app_") and f.endswith("_share") and f != "app_other_share":
            out.append(master.str.to_lowercase() == f[4:-6])
        elif f.startswith("cat_") and f.endswith("_share"):
            out.append(pl.col("application_category").fill_null("Unspecified")
                       .str.to_lowercase() == f[4:-6])
        elif f in ("unanswered_out_share", "syn_ratio", "rst_ratio"):
            out.append((pl.col("direction") == "out") & (pl.col("packets_in") == 0))
        for v in t.get("new_values") or []:
            out.append(pl.col("server_name").fill_null("").str.contains(str(v), literal=True))
    return pl.any_horizontal(out) if out else None


def _learning_summary(bundle: Any, scored: pl.DataFrame, include_learning: bool
                      ) -> dict[str, Any] | None:
    marked = scored.filter(pl.col("learning"))
    if marked.height == 0:
        return None
    rec = bundle.learning
    return {"start": rec["start"], "end": rec["end"],
            "sources": sorted(marked["source"].unique().to_list()), "windows": marked.height,
            "alerts": include_learning}


def window_peers(scored: pl.DataFrame, assigned: pl.DataFrame, limit: int = 20
                 ) -> pl.DataFrame:
    """The local peers of each anomalous window's device in that window, most flows first (at
    most ``limit``): who it was talking to when it deviated, which ties a scanner to its
    victims (``serving.alerts.incidents``)."""
    return top_peers(scored, peer_counts(assigned), limit)


def peer_counts(assigned: pl.DataFrame) -> pl.DataFrame:
    """Flows per window and local peer (``source``, ``device_id``, ``start``, ``peer_ip``,
    ``n``): what ``top_peers`` needs of a window's flows once its score is known."""
    return (
        assigned.filter(pl.col("peer_local") & pl.col("peer_ip").is_not_null())
        .group_by("source", "device_id", "start", "peer_ip").agg(pl.len().alias("n"))
    )


def top_peers(scored: pl.DataFrame, counts: pl.DataFrame, limit: int = 20) -> pl.DataFrame:
    """``window_peers`` from ``peer_counts``."""
    keys = scored.filter(pl.col("anomalous").fill_null(False)).select(
        "source", "device_id", "start")
    return (
        counts.join(keys, on=["source", "device_id", "start"], how="semi")
        .sort(["n", "peer_ip"], descending=[True, False])
        .group_by("source", "device_id", "start", maintain_order=True)
        .agg(pl.col("peer_ip").head(limit).alias("local_peers"))
    )


def device_peers(counts: pl.DataFrame, limit: int = 50) -> pl.DataFrame:
    """Each device's local peers over the input (``peer_counts`` of every window), most flows
    first (at most ``limit``): the console's device page and network map draw them."""
    return (
        counts.group_by("device_id", "peer_ip").agg(pl.col("n").sum())
        .sort(["n", "peer_ip"], descending=[True, False])
        .group_by("device_id", maintain_order=True)
        .agg(pl.col("peer_ip").head(limit).cast(pl.String).alias("local_peers"))
    )


@dataclass
class ScoredParts:
    """What ``report`` needs of the flows, gathered part by part (``score_parts``)."""

    scored: pl.DataFrame
    inventory: pl.DataFrame
    new_peers: pl.DataFrame | None
    peer_counts: pl.DataFrame
    #: how many parts the flows were scored in
    parts: int = 1
    #: evidence of risk findings (``features.findings.evidence``) of the flows in range
    risks: pl.DataFrame = field(default_factory=lambda: risk_evidence(pl.DataFrame()))
    #: industrial requests per (device, host) over the whole input: the fallback masters
    requests: pl.DataFrame = field(default_factory=lambda: merge_requests([]))
    #: the software the devices showed in the flows in range (``device_software``)
    software: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SOFTWARE_SCHEMA))
    #: attribution's per-source decisions and the windows' origins over the whole input:
    #: what finding an alert's flows again needs (``flows_behind``)
    context: Any = None
    origins: pl.DataFrame | None = None
    #: per device (``source``, ``device_id``): why it is its type (``type_evidence``)
    type_evidence: pl.DataFrame | None = None


def _segments(flows: pl.DataFrame, origins: pl.DataFrame, step_ms: int, align: str,
              target: int) -> pl.Series:
    """Each flow's part: whole blocks of ``step_ms`` from its source's window origin (every
    window of every spec lies in one block), consecutive blocks gathered into parts of about
    ``target`` flows."""
    t = pl.col("first_seen").dt.epoch("ms")
    if align == "source":
        block = ((t - pl.col("_origin")) // step_ms).clip(lower_bound=0).fill_null(0)
        keyed = flows.select("source", "first_seen").join(
            origins, on="source", how="left", maintain_order="left").select(
            "source", block.alias("_b"))
    else:
        keyed = flows.select("source", (t // step_ms).alias("_b"))
    blocks = keyed.group_by("source", "_b").len().sort("source", "_b").with_columns(
        ((pl.col("len").cum_sum() - pl.col("len")) // target).alias("_seg"))
    return keyed.join(blocks, on=["source", "_b"], how="left", maintain_order="left")["_seg"]


def score_parts(bundle: Any, flows: pl.DataFrame, *, window: WindowSpec | None = None,
                learning_sources: Collection[str] = (), evidence_memory: Any | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None,
                segment_flows: int | None = SEGMENT_FLOWS) -> ScoredParts:
    """Score ``flows`` as ``score_flows`` does, part by part, and gather the inventory, the
    new peers and the peer counts of the windows in ``since``..``until``.

    What the parts share is decided over the whole input first, from columns of the flows
    only: attribution's per-source decisions (``attribution_context``) and each source's
    window origin. Parts are cut at boundaries common to every window spec in use, so each
    window's flows lie in one part, in their order; a part's windows are exactly the whole
    input's. The device-level answers (the classifier's decision over a device's windows, its
    evidence, the inventory) are then taken from all windows, or merged as sets and sums.
    """
    spec = window or bundle.window
    cspec = None
    if bundle.classifier is not None and bundle.classifier_window not in (None, bundle.window):
        cspec = bundle.classifier_window
    evidence_wanted = hasattr(bundle.classifier, "evidence_")
    ctx = attribution_context(flows)
    step = int(round(spec.length_s * 1000))
    if cspec is not None:
        step = math.lcm(step, int(round(cspec.length_s * 1000)))
    one = (not segment_flows or flows.height <= segment_flows
           or (cspec is not None and cspec.align != spec.align))
    origins = None
    if spec.align == "source" or (cspec is not None and cspec.align == "source"):
        # the first attributed flow of each source, over slices of the input
        size = segment_flows or flows.height or 1
        origins = pl.concat([window_origins(attribute(flows.slice(i, size), ctx))
                             for i in range(0, max(flows.height, 1), size)]
                            ).group_by("source").agg(pl.col("_origin").min())
    if one:
        seg = pl.Series("_seg", [0] * flows.height, dtype=pl.Int64)
    else:
        seg = _segments(flows, origins if origins is not None else pl.DataFrame(
            schema={"source": pl.String, "_origin": pl.Int64}), step, spec.align,
            int(segment_flows or 1))
    win_parts, cwin_parts, ev_parts, inv_parts, peer_parts, count_parts = [], [], [], [], [], []
    risk_parts, request_parts, software_parts = [], [], []
    explain = getattr(bundle, "baseline", None) is not None
    tok_parts = []
    for k in (seg.unique().sort().to_list() if flows.height else [0]):
        part = flows if one else flows.filter(seg == k)
        att = attribute(part, ctx)
        assigned = assign_windows(att, spec, origins)
        win_parts.append(window_features(assigned, industrial=one))
        if explain:  # what fell into each hashed feature: an alert names it
            tok_parts.append(window_tokens(assigned, KEY_COLUMNS))
        if cspec is not None:
            cwin_parts.append(window_features(assign_windows(att, cspec, origins),
                                              industrial=one))
        if evidence_wanted:
            # over everything the input shows of each device, not window by window
            ev_parts.append(device_evidence(part, att))
        request_parts.append(industrial_requests(att))  # who masters a device: all input
        if since is not None:
            assigned = assigned.filter(pl.col("end") > since)
        if until is not None:
            assigned = assigned.filter(pl.col("start") < until)
        if since is not None or until is not None:
            att = assigned.drop("start", "end")
        inv_parts.append(inventory(part, att))
        risk_parts.append(risk_evidence(att))
        software_parts.append(device_software(att))
        peers = new_peers(bundle, assigned)
        if peers is not None:
            peer_parts.append(peers)
        count_parts.append(peer_counts(assigned))
        del part, att, assigned
    win = pl.concat(win_parts).sort(KEY_COLUMNS) if len(win_parts) > 1 else win_parts[0]
    cwin = None
    if cspec is not None:
        cwin = (pl.concat(cwin_parts).sort(KEY_COLUMNS) if len(cwin_parts) > 1
                else cwin_parts[0])
    if not one:
        # a flow's industrial requests count in the windows they happened in, which may lie
        # in a later part: those features come from all industrial flows at once
        ot_att = attribute(flows.filter(pl.col("ot_timeline").is_not_null()), ctx)
        win = add_industrial(win, assign_windows(ot_att, spec, origins))
        if cwin is not None and cspec is not None:
            cwin = add_industrial(cwin, assign_windows(ot_att, cspec, origins))
    evidence = None
    if evidence_wanted:
        evidence = merge_evidence(ev_parts)
        if evidence_memory is not None:
            evidence = evidence_memory.merge(evidence)
    scored = score_windows(bundle, win, classifier_windows=cwin,
                           learning_sources=learning_sources, evidence=evidence)
    if explain:
        scored = explain_windows(scored, pl.concat(tok_parts),
                                 getattr(bundle, "vocabulary", None))
    type_evidence = _type_evidence(bundle, scored, win if cwin is None else cwin, evidence)
    if since is not None:
        scored = scored.filter(pl.col("end") > since)
    if until is not None:
        scored = scored.filter(pl.col("start") < until)
    return ScoredParts(scored, merge_inventories(inv_parts),
                       pl.concat(peer_parts) if peer_parts else None,
                       pl.concat(count_parts), len(win_parts), risks=pl.concat(risk_parts),
                       requests=merge_requests(request_parts),
                       software=pl.concat(software_parts), context=ctx, origins=origins,
                       type_evidence=type_evidence)


def _type_evidence(bundle: Any, scored: pl.DataFrame, win: pl.DataFrame,
                   evidence: pl.DataFrame | None) -> pl.DataFrame | None:
    """Why each device is (or is nearest to) its type, from the model that decided it."""
    clf = getattr(bundle, "classifier", None)
    if clf is None or not hasattr(clf, "type_contributions") or scored.height == 0:
        return None
    types = scored.select("source", "device_id", "nearest_type").drop_nulls(
        "nearest_type").unique(["source", "device_id"], keep="last")
    if hasattr(clf, "evidence_"):
        out: pl.DataFrame = clf.type_contributions(win, types, evidence=evidence)
    else:
        out = clf.type_contributions(win, types)
    return out


def new_peers(bundle: Any, assigned: pl.DataFrame) -> pl.DataFrame | None:
    """New local peers per window (``assigned``: attributed flows with window columns), when
    the model learnt its devices' peers."""
    if getattr(bundle, "peers", None) is None or assigned.height == 0:
        return None
    peers: pl.DataFrame = bundle.peers.new_peers(assigned)
    return peers


_STR_LIST = {"type": "array", "items": {"type": "string"}}
_NUM = {"type": ["number", "null"]}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}
_TOP = {"type": ["array", "null"], "items": {
    "type": "object", "required": ["feature", "observed", "expected"],
    "properties": {"feature": {"type": "string"}, "observed": {"type": "number"},
                   "expected": {"type": "number"}, "share": {"type": "number"}}}}

#: A device's identity fields, in devices and windows alike (``DeviceIdentity``).
_IDENTITY = json_schema(DeviceIdentity)["properties"]

#: The documented shape of ``flockwatch score --format json`` (JSON Schema, draft 2020-12).
SCORE_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema_version", "model", "since", "until", "learning", "devices", "windows",
                 "alerts", "incidents", "findings", "vulnerabilities", "problems"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "model": {"type": "string"},
        "since": {"oneOf": [_TIME, {"type": "null"}]},
        "until": {"oneOf": [_TIME, {"type": "null"}]},
        "learning": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["start", "end", "sources", "windows", "alerts"],
            "properties": {"start": _TIME, "end": _TIME, "sources": _STR_LIST,
                           "windows": {"type": "integer", "minimum": 1},
                           "alerts": {"type": "boolean"}}}]},
        "devices": {"type": "array", "items": {
            "type": "object",
            "required": ["device_id", "mac", "vendor", "ips", "hostnames", "server_names",
                         "protocols", "applications", "industrial", "industrial_protocols",
                         "first_seen", "last_seen", "flows", "packets", "bytes", "device_type",
                         "type_confidence", "unknown", "nearest_type", "category",
                         "category_confidence", "oui_vendor", "vendor_confidence",
                         "candidates", "new_device", "windows",
                         "anomalous_windows", "learning_windows", "baseline", "alerts",
                         "alerts_anomalous_window", "alerts_new_peer", "alerts_new_device",
                         "local_peers", "type_evidence", *RISK_COLUMNS, "vulnerabilities",
                         "cves"],
            "properties": {
                "device_id": {"type": "string"}, "mac": {"type": ["string", "null"]},
                "vendor": {"type": ["string", "null"]}, "ips": _STR_LIST,
                "hostnames": _STR_LIST, "server_names": _STR_LIST, "protocols": _STR_LIST,
                "applications": _STR_LIST, "industrial": {"type": "boolean"},
                "industrial_protocols": _STR_LIST, "first_seen": _TIME, "last_seen": _TIME,
                "flows": {"type": "integer"}, "packets": {"type": "integer"},
                "bytes": {"type": "integer"}, **_IDENTITY,
                "oui_vendor": {"type": ["string", "null"]},
                "new_device": {"type": ["boolean", "null"]},
                "windows": {"type": "integer"}, "anomalous_windows": {"type": "integer"},
                **{c: {"type": "integer", "minimum": 0} for c in ALERT_COUNT_COLUMNS},
                "learning_windows": {"type": ["integer", "null"]},
                "local_peers": _STR_LIST,
                "type_evidence": {"type": "array", "items": json_schema(TypeEvidence)},
                "software": _STR_LIST, "firmware": _STR_LIST,
                "vulnerabilities": {"type": "integer", "minimum": 0}, "cves": _STR_LIST,
                "risk_score": {"type": "integer", "minimum": 0, "maximum": 100},
                "findings": {"type": "integer", "minimum": 0},
                "baseline": {"enum": ["learned", "thin", "new", None]},
            }}},
        "windows": {"type": "array", "items": {
            "type": "object",
            "required": ["device_id", "mac", "ip", "start", "end", "learning", "device_type",
                         "type_confidence", "unknown", "nearest_type", "anomaly_score",
                         "threshold", "anomalous", "top_features", "category",
                         "category_confidence", "vendor", "vendor_confidence", "candidates"],
            "properties": {
                "device_id": {"type": "string"}, "mac": {"type": ["string", "null"]},
                "ip": {"type": ["string", "null"], "not": {"enum": ["::", "0.0.0.0"]}},
                "start": _TIME, "end": _TIME, "learning": {"type": "boolean"}, **_IDENTITY,
                "anomaly_score": _NUM, "threshold": _NUM,
                "anomalous": {"type": ["boolean", "null"]}, "top_features": _TOP,
            }}},
        # generated from the typed contract (serving/contract.py)
        "alerts": {"type": "array", "items": json_schema(Alert)},
        "incidents": {"type": "array", "items": json_schema(Incident)},
        "findings": {"type": "array", "items": json_schema(Finding)},
        # each a known CVE of a device (filled where a CVE database is given)
        "vulnerabilities": {"type": "array", "items": json_schema(Vulnerability)},
        "problems": {"type": "array"},
    },
}
