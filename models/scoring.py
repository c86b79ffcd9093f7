"""The scoring pipeline: flow records in, one row per device window out (``OUTPUT_COLUMNS``),
from a ``Bundle``'s window spec, classifier and baseline; fields of a part the model lacks are
null. What the pyfunc, the REST server, ``score`` and the sensor all run; no MLflow here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import numpy as np
import polars as pl

from flockwatch.features.attribution import attribute
from flockwatch.features.evidence import device_evidence
from flockwatch.features.explain import window_tokens
from flockwatch.features.output import ISO_UTC
from flockwatch.features.schema import conform
from flockwatch.features.windows import (
    KEY_COLUMNS,
    WindowSpec,
    assign_windows,
    ip_rank,
    window_features,
)
from flockwatch.models.bundle import Bundle
from flockwatch.models.deviations import explain_windows

OUTPUT_COLUMNS = [
    "source", "device_id", "mac", "ip", "start", "end", "device_type", "type_confidence",
    "unknown", "new_device", "anomaly_score", "threshold", "anomalous", "top_features",
    "nearest_type", "learning", "category", "category_confidence", "vendor",
    "vendor_confidence", "candidates",
]
#: The identity answers beside the model (``DeviceIdentifier``); null from a model without.
IDENTITY_COLUMNS = ["category", "category_confidence", "vendor", "vendor_confidence",
                    "candidates"]
#: Columns a flow record must carry; every other FLOW_SCHEMA column may be absent (null).
REQUIRED_FLOW_COLUMNS = ["first_seen", "src_ip", "dst_ip", "packets", "bytes"]


def _to_datetime(col: pl.Series) -> pl.Series:
    target = pl.Datetime("ms", "UTC")
    if isinstance(col.dtype, pl.Datetime):
        return col.cast(target) if col.dtype.time_zone else col.dt.replace_time_zone(
            "UTC").cast(target)
    if col.dtype.is_numeric():
        return col.cast(pl.Int64).cast(target)
    parsed = col.cast(pl.String).str.to_datetime(time_zone="UTC", strict=False)
    return parsed.cast(target)


def coerce_flows(model_input: Any) -> pl.DataFrame:
    """Flow records (polars/pandas DataFrame, list of dicts) -> a FLOW_SCHEMA table.

    Timestamps may be datetimes, ISO-8601 strings or epoch milliseconds.
    """
    if isinstance(model_input, pl.DataFrame):
        df = model_input
    elif isinstance(model_input, list):
        df = pl.DataFrame(model_input, infer_schema_length=None) if model_input else pl.DataFrame()
    else:
        try:
            df = pl.from_pandas(model_input)
        except Exception:
            raise TypeError(f"expected flow records as a DataFrame, got "
                            f"{type(model_input).__name__}") from None
    missing = [c for c in REQUIRED_FLOW_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"flow records lack required column(s): {', '.join(missing)}")
    for c in ("first_seen", "last_seen"):
        if c in df.columns:
            df = df.with_columns(_to_datetime(df[c]).alias(c))
    if "last_seen" not in df.columns:
        df = df.with_columns(pl.col("first_seen").alias("last_seen"))
    if "source" not in df.columns:
        df = df.with_columns(pl.lit("input").alias("source"))
    bad = df.filter(pl.col("first_seen").is_null())
    if bad.height:
        raise ValueError(f"{bad.height} flow record(s) have no valid first_seen timestamp")
    return conform(df)


def flows_to_pandas(flows: pl.DataFrame) -> Any:
    """A flow table as pandas input for the pyfunc, timestamps as epoch milliseconds.

    The signature accepts datetimes, ISO-8601 strings and epoch milliseconds alike (its
    timestamp columns are untyped, as MLflow's datetime type has no time zone), and MLflow
    checks untyped columns value by value: integers pass that check about five times faster
    than datetimes, which matters in large batches.
    """
    return flows.with_columns(
        pl.col("first_seen", "last_seen").dt.cast_time_unit("ms").dt.epoch("ms")
    ).to_pandas()


def score_flows(bundle: Bundle, flows: pl.DataFrame, *, top: int = 5,
                attributed: pl.DataFrame | None = None, assigned: pl.DataFrame | None = None,
                window: WindowSpec | None = None, learning_sources: Collection[str] = (),
                evidence_memory: Any | None = None) -> pl.DataFrame:
    """Score a flow table with a bundle: one row per device window.

    ``attributed`` (``attribute(flows)``) and ``assigned`` (those flows with the window
    columns of ``window``) may be passed when the caller has them already; ``window``
    replaces the bundle's window alignment (the live sensor aligns to the clock).
    ``learning_sources`` names the sources that are captures the baseline learnt from
    (``serving.score.learnt_sources`` finds them by content hash): their windows starting
    before the learning end are ``learning``. Nothing else is: a new capture, live traffic.
    ``evidence_memory`` (``features.evidence.EvidenceMemory``) adds what earlier inputs
    showed of each device to its product evidence, and remembers this input's.
    """
    att = attribute(flows) if attributed is None else attributed
    if assigned is None:
        assigned = assign_windows(att, window or bundle.window)
    win = window_features(assigned)
    cwin = None
    if bundle.classifier is not None and bundle.classifier_window not in (None, bundle.window):
        cwin = window_features(assign_windows(att, bundle.classifier_window))
    evidence = None
    if hasattr(bundle.classifier, "evidence_"):
        # over everything the input shows of each device, not window by window
        evidence = device_evidence(flows, att)
        if evidence_memory is not None:
            evidence = evidence_memory.merge(evidence)
    out = score_windows(bundle, win, top=top, classifier_windows=cwin,
                        learning_sources=learning_sources, evidence=evidence)
    if bundle.baseline is None or not out["anomalous"].fill_null(False).any():
        return out
    # the words behind a hashed feature, for the anomalous windows that show one
    flagged = out.filter(pl.col("anomalous").fill_null(False)
                         & pl.col("top_features").str.contains("name_token_|fingerprint_")
                         ).select(KEY_COLUMNS)
    tokens = window_tokens(assigned.join(flagged, on=KEY_COLUMNS, how="semi"), KEY_COLUMNS)
    return explain_windows(out, tokens, getattr(bundle, "vocabulary", None))


def _device_ip(ip: pl.Expr) -> pl.Expr:
    """A window's own IPv4 address, else its device's best address over every window of the
    source (``ip_rank``): a window holding only IPv6 or DHCP traffic still shows the IPv4
    address the device has elsewhere."""
    rank = ip_rank(ip)
    by = ["source", "device_id"]
    best = pl.coalesce(*(ip.filter(rank == r).first().over(by) for r in range(3)))
    return pl.when(rank == 0).then(ip).otherwise(best)


def learning_flag(bundle: Any, learning_sources: Collection[str],
                  start: str = "start") -> pl.Expr:
    """True for a window of one of ``learning_sources`` (captures the baseline learnt from)
    that starts before the learning end; False everywhere for other sources and for models
    without a learning record."""
    end: dt.datetime | None = getattr(bundle, "learning_end", lambda: None)()
    if end is None or not learning_sources:
        return pl.lit(False)
    return pl.col("source").is_in(list(learning_sources)) & (pl.col(start) < end)


def score_windows(bundle: Bundle, win: pl.DataFrame, *, top: int = 5,
                  classifier_windows: pl.DataFrame | None = None,
                  learning_sources: Collection[str] = (),
                  evidence: pl.DataFrame | None = None) -> pl.DataFrame:
    n = win.height
    learning = learning_flag(bundle, learning_sources)
    out = win.select(
        "source", "device_id", "mac",
        _device_ip(pl.col("ip")).alias("ip"),
        "start", "end",
        learning.alias("learning"),
    )
    null_f = pl.Series([None] * n, dtype=pl.Float64)
    null_b = pl.Series([None] * n, dtype=pl.Boolean)
    if bundle.classifier is not None and n:
        cw = win if classifier_windows is None else classifier_windows
        three = hasattr(bundle.classifier, "evidence_")
        dev = (bundle.classifier.predict_devices(cw, evidence=evidence) if three
               else bundle.classifier.predict_devices(cw))
        # the most probable known type: type_confidence is its probability, also when the
        # device is ruled unknown
        dev = dev.select("source", "device_id", "device_type", "type_confidence", "unknown",
                         pl.col("closest_type").alias("nearest_type"),
                         *(IDENTITY_COLUMNS if three else []))
        out = out.join(dev, on=["source", "device_id"], how="left")
    else:
        out = out.with_columns(
            pl.Series("device_type", [None] * n, dtype=pl.String),
            null_f.alias("type_confidence"), null_b.alias("unknown"),
            pl.Series("nearest_type", [None] * n, dtype=pl.String))
    if bundle.baseline is not None and n:
        dev_out = bundle.baseline.deviations(win, top=top)
        scores = dev_out.scores
        devs = win["device_id"].to_list()
        known = bundle.baseline.known(devs)
        thr = bundle.baseline.thresholds(devs)
        scores = np.where(known, scores, np.nan)
        out = out.with_columns(
            pl.Series("new_device", ~known),
            pl.Series("anomaly_score", scores, dtype=pl.Float64).fill_nan(None),
            pl.Series("threshold", np.where(known, thr, np.nan)).fill_nan(None),
            pl.Series("anomalous", known & (np.nan_to_num(scores) > thr)),
            dev_out.json().set(pl.Series(~known), None),
        )
    else:
        out = out.with_columns(null_b.alias("new_device"), null_f.alias("anomaly_score"),
                               null_f.alias("threshold"), null_b.alias("anomalous"),
                               pl.Series("top_features", [None] * n, dtype=pl.String))
    if "category" not in out.columns:
        out = out.with_columns(
            pl.Series("category", [None] * n, dtype=pl.String),
            null_f.alias("category_confidence"), pl.Series("vendor", [None] * n, dtype=pl.String),
            null_f.alias("vendor_confidence"), pl.Series("candidates", [None] * n,
                                                         dtype=pl.String))
    return out.select(OUTPUT_COLUMNS)


def to_records_frame(out: pl.DataFrame) -> Any:
    """Output rows as a pandas DataFrame with ISO-8601 UTC times (what pyfunc returns)."""
    return out.with_columns(
        pl.col("start", "end").dt.strftime(ISO_UTC)
    ).to_pandas()
