"""Features as a person reads them: a short label, the range a value can take, the value in
the feature's own units, and, for a hashed feature, what fell into its bucket.

An alert that says "name_token_57 0.1845 (expected -0.0076)" means nothing to an analyst: a
bucket number names no word, a log scale hides the count, and a reconstruction can stray out
of the feature's range. The baseline keeps its numbers; what is shown is built here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import polars as pl

from flockwatch.features.ot import (
    CLASSES,
    MODBUS_FC_FEATURES,
    MODBUS_FC_NAMES,
    PROTOCOL_NAMES,
    PROTOCOLS,
)
from flockwatch.features.windows import (
    APPLICATIONS,
    CATEGORIES,
    N_FINGERPRINT_BUCKETS,
    N_NAME_BUCKETS,
    SMALL_TOKENS,
    fingerprint_rows,
    name_token_rows,
    name_words,
    token_bucket,
)

#: hashed families: column prefix -> (what the bucket holds, buckets, vocabulary prefix)
HASHED = {
    "name_token_": ("host-name words", N_NAME_BUCKETS, "name:"),
    "fingerprint_": ("client fingerprints and user agents", N_FINGERPRINT_BUCKETS, "fp:"),
}

# label, unit; a ``log_`` feature is log(1 + x) of x in that unit
_SCALARS: dict[str, tuple[str, str]] = {
    "log_flows": ("flows", ""),
    "log_packets": ("packets", ""),
    "log_bytes": ("bytes", "B"),
    "log_bytes_out": ("bytes sent", "B"),
    "log_bytes_in": ("bytes received", "B"),
    "out_byte_share": ("share of bytes sent", "%"),
    "out_flow_share": ("share of flows it started", "%"),
    "log_bytes_per_s": ("bytes per second", "B/s"),
    "log_flows_per_min": ("flows per minute", "/min"),
    "mean_packet_size": ("mean packet size", "B"),
    "mean_packet_size_std": ("packet size spread", "B"),
    "max_packet_size": ("largest packet", "B"),
    "min_packet_size": ("smallest packet", "B"),
    "log_packets_per_flow": ("packets per flow", ""),
    "log_mean_flow_duration": ("mean flow duration", "s"),
    "log_max_flow_duration": ("longest flow", "s"),
    "log_mean_piat": ("mean gap between packets", "ms"),
    "log_std_piat": ("spread of gaps between packets", "ms"),
    "log_flow_iat_mean": ("mean time between flows", "s"),
    "flow_iat_cv": ("irregularity of flow starts (0 = clockwork)", ""),
    "periodic_flow_share": ("share of flows repeating at a steady pace", "%"),
    "tcp_share": ("share of flows over TCP", "%"),
    "udp_share": ("share of flows over UDP", "%"),
    "icmp_share": ("share of flows over ICMP", "%"),
    "other_l4_share": ("share of flows over other IP protocols", "%"),
    "app_other_share": ("share of flows of other applications", "%"),
    "port_other_low_share": ("share of flows to other ports below 1024", "%"),
    "port_other_high_share": ("share of flows to other ports from 1024", "%"),
    "log_distinct_ports": ("distinct service ports", ""),
    "log_distinct_names": ("distinct names looked up or served", ""),
    "log_peers": ("peers", ""),
    "log_local_peers": ("local peers", ""),
    "log_remote_peers": ("remote peers", ""),
    "local_flow_share": ("share of flows to local peers", "%"),
    "syn_ratio": ("share of TCP packets with SYN", "%"),
    "rst_ratio": ("share of TCP packets with RST", "%"),
    "fin_ratio": ("share of TCP packets with FIN", "%"),
    "psh_ratio": ("share of TCP packets with PSH", "%"),
    "unanswered_out_share": ("share of its flows that got no answer", "%"),
}
# the industrial features (features.ot): "Modbus write share: 12% (expected 0%)"
_SCALARS.update({
    "log_ot_requests": ("industrial requests", ""),
    **{f"ot_{c}_share": (f"industrial {c} share", "%") for c in CLASSES},
    "log_ot_program": ("industrial program changes (download, stop, restart)", ""),
    "ot_exception_share": ("industrial exception share", "%"),
    "log_ot_units": ("industrial units addressed", ""),
    "log_ot_objects": ("registers or objects addressed", ""),
    "log_ot_poll_period": ("polling period", "s"),
    "ot_poll_jitter": ("polling jitter (deviation / period)", ""),
    **{f"modbus_fc_{k}_share": (f"Modbus function {k} ({MODBUS_FC_NAMES[k]}) share", "%")
       for k in MODBUS_FC_FEATURES},
    "modbus_fc_other_share": ("Modbus other functions share", "%"),
    **{f"{p}_write_share": (f"{PROTOCOL_NAMES[p]} write share", "%") for p in PROTOCOLS},
})
_APP_NAMES = {f"app_{a.lower()}_share": a for a in APPLICATIONS}
_CAT_NAMES = {f"cat_{c.lower()}_share": c for c in CATEGORIES}


def hashed_family(feature: str) -> str | None:
    """The prefix of a hashed feature (``name_token_``, ``fingerprint_``), else None."""
    return next((p for p in HASHED if feature.startswith(p)), None)


def feature_label(feature: str) -> str:
    """A short label: ``share of flows to port 23``, ``host-name words``, ``local peers``."""
    if feature in _SCALARS:
        return _SCALARS[feature][0]
    if feature in _APP_NAMES:
        return f"share of flows that are {_APP_NAMES[feature]}"
    if feature in _CAT_NAMES:
        return f"share of flows in nDPI category {_CAT_NAMES[feature]}"
    if feature.startswith("port_") and feature.endswith("_share"):
        return f"share of flows to port {feature.removeprefix('port_').removesuffix('_share')}"
    family = hashed_family(feature)
    if family is not None:
        return HASHED[family][0]
    return feature


def _unit(feature: str) -> str:
    if feature in _SCALARS:
        return _SCALARS[feature][1]
    return "%"  # every other feature is a share


def feature_range(feature: str) -> tuple[float, float]:
    """The values the feature can take: shares and ratios in [0, 1], the rest >= 0."""
    if _unit(feature) == "%":
        return 0.0, 1.0
    return 0.0, math.inf


def _number(x: float, unit: str) -> str:
    if unit == "%":
        pct = 100 * x
        return f"{pct:.0f}%" if pct >= 10 or pct == 0 else f"{pct:.1f}%"
    if unit in ("B", "B/s"):
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:.1f} {prefix}{unit}"
        return f"{x:.0f} {unit}"
    text = f"{x:.0f}" if abs(x) >= 10 or x == int(x) else f"{x:.2g}"
    return f"{text} {unit}".rstrip() if unit and unit != "/min" else text + unit


def present(feature: str, value: float | None) -> str:
    """The value in the feature's units: ``45%``, ``120`` flows, ``3.2 kB``, ``1.5 s``."""
    if value is None or not math.isfinite(value):
        return "?"
    lo, hi = feature_range(feature)
    value = min(max(value, lo), hi)
    if feature.startswith("log_"):
        value = math.expm1(value)
    return _number(value, _unit(feature))


def describe(feature: str, observed: float | None, expected: float | None) -> str:
    """``share of flows to port 23: 45% (expected 0%)``."""
    return (f"{feature_label(feature)}: {present(feature, observed)} "
            f"(expected {present(feature, expected)})")


def window_tokens(att: pl.DataFrame, keys: list[str], *, small: bool | None = None
                  ) -> pl.DataFrame:
    """``keys`` + ``feature`` + ``tok``: for each window, the distinct words and fingerprints
    behind each hashed feature (``att`` carries the window columns in ``keys``).

    A few flows (a REST request's alerting windows) are read in plain Python, the same table
    as the polars queries of many (``small``: None chooses by ``SMALL_TOKENS``)."""
    if (att.height <= SMALL_TOKENS) if small is None else small:
        return _window_tokens_rows(att, keys)
    parts = []
    for family, rows in (("name_token_", name_token_rows), ("fingerprint_", fingerprint_rows)):
        n = HASHED[family][1]
        toks = rows(att, keys).filter(pl.col("tok").is_not_null()
                                      & (pl.col("tok").str.len_chars() > 0)).unique()
        vocab = toks.select(pl.col("tok").unique())
        vocab = vocab.with_columns(pl.Series(
            "feature", [f"{family}{token_bucket(t, n):02d}" for t in vocab["tok"].to_list()],
            dtype=pl.String))
        parts.append(toks.join(vocab, on="tok").select(*keys, "feature", "tok"))
    return pl.concat(parts).sort([*keys, "feature", "tok"])


def _window_tokens_rows(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    names_n, fps_n = HASHED["name_token_"][1], HASHED["fingerprint_"][1]
    found: set[tuple[object, ...]] = set()
    for *key, name, fp, ua in att[[*keys, "server_name", "client_fingerprint",
                                   "user_agent"]].iter_rows():
        for word in name_words(name) if name is not None else ():
            if word:
                found.add((*key, f"name_token_{token_bucket(word, names_n):02d}", word))
        for tok in (fp, ua):
            if tok:
                found.add((*key, f"fingerprint_{token_bucket(tok, fps_n):02d}", tok))
    schema = att.schema
    return pl.DataFrame(sorted(found), schema={**{k: schema[k] for k in keys},
                                               "feature": pl.String, "tok": pl.String},
                        orient="row")


def vocabulary(att: pl.DataFrame) -> dict[str, frozenset[str]]:
    """Per device, the words and fingerprints its hashed features counted (prefixed ``name:``
    or ``fp:``): what a baseline learnt, so that an alert can mark the ones never seen."""
    toks = window_tokens(att, ["device_id"])
    prefix = pl.when(pl.col("feature").str.starts_with("name_token_")).then(
        pl.lit(HASHED["name_token_"][2])).otherwise(pl.lit(HASHED["fingerprint_"][2]))
    grouped = toks.group_by("device_id").agg((prefix + pl.col("tok")).unique().alias("v"))
    return {d: frozenset(v) for d, v in grouped.iter_rows()}


def is_learnt(feature: str, tok: str, learnt: Iterable[str] | None) -> bool | None:
    """Whether a device showed ``tok`` while learning (None when the model cannot say)."""
    if learnt is None:
        return None
    family = hashed_family(feature)
    return family is not None and HASHED[family][2] + tok in learnt


__all__ = ["HASHED", "describe", "feature_label", "feature_range", "hashed_family",
           "is_learnt", "present", "vocabulary", "window_tokens"]
