"""Labelled capture sets: a folder with captures and ``labels.csv`` (or one folder per label),
flow caches keyed by the capture's content hash, and capture-grouped splits."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.captures import is_capture_name
from flockwatch.features.flows import Problem, read_source_file
from flockwatch.features.hashing import file_hash
from flockwatch.features.output import write_parquet
from flockwatch.features.windows import WindowSpec, empty_windows, windows


class DatasetError(ValueError):
    """A dataset problem, named by file and row."""


_HEX2 = "[0-9a-f]{2}"
_MAC_FORMS = (
    re.compile(rf"^({_HEX2})([:-])({_HEX2})\2({_HEX2})\2({_HEX2})\2({_HEX2})\2({_HEX2})$"),
    re.compile(r"^([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})$"),
    re.compile(r"^([0-9a-f]{12})$"),
)


def normalise_mac(text: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` (the form device ids take) from a MAC in any usual notation
    (colons, hyphens, Cisco dots, bare hex; any case), None when ``text`` is none of them."""
    t = text.strip().lower()
    for form in _MAC_FORMS:
        m = form.match(t)
        if m:
            digits = "".join(g for g in m.groups() if g not in (":", "-"))
            return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    return None


@dataclass(frozen=True)
class LabelledCapture:
    path: Path
    label: str
    mac: str | None
    group: str
    #: the product's category (camera, smart_plug, ...) and maker, where labels.csv has them
    category: str | None = None
    vendor: str | None = None


@dataclass
class LabelledDataset:
    root: Path
    label_column: str
    captures: list[LabelledCapture]

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.captures:
            counts[c.label] = counts.get(c.label, 0) + 1
        return dict(sorted(counts.items()))

    def group_counts(self) -> dict[str, int]:
        """Groups (captures, unless a group column says otherwise) per label: what
        capture-separated validation splits, whatever the number of devices per capture."""
        groups: dict[str, set[str]] = {}
        for c in self.captures:
            groups.setdefault(c.label, set()).add(c.group)
        return {label: len(g) for label, g in sorted(groups.items())}

    def fingerprint(self) -> str:
        """Hash of the label table and every capture's content hash."""
        h = hashlib.sha256()
        for c in sorted(self.captures, key=lambda c: str(c.path)):
            # relpath: labels.csv may name captures outside its folder (a held-out split)
            h.update(f"{os.path.relpath(c.path, self.root)}|{c.label}|{c.mac}|".encode())
            h.update(file_hash(c.path).encode())
        return h.hexdigest()


def load_dataset(root: str | os.PathLike[str], label_column: str = "device_type",
                 group_column: str | None = None) -> LabelledDataset:
    """Read a labelled capture set; raise ``DatasetError`` naming the file and row."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    labels = root / "labels.csv"
    caps: list[LabelledCapture] = []
    if labels.exists():
        with labels.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            missing = [c for c in ("path", label_column) if c not in cols]
            if missing:
                raise DatasetError(f"{labels}: missing column(s) {', '.join(missing)} "
                                   f"(has {', '.join(cols) or 'none'})")
            if group_column and group_column not in cols:
                raise DatasetError(f"{labels}: no group column {group_column!r}")
            for i, row in enumerate(reader, start=2):
                p = root / (row["path"] or "")
                if not row["path"] or not p.is_file():
                    raise DatasetError(f"{labels}, row {i}: capture {row['path']!r} does not exist")
                label = (row[label_column] or "").strip()
                if not label:
                    what = (f"category {row['category'].strip()!r} but no {label_column}"
                            if (row.get("category") or "").strip() else f"empty {label_column}")
                    raise DatasetError(f"{labels}, row {i}: {what}")
                raw_mac = (row.get("mac") or "").strip()
                mac = normalise_mac(raw_mac) or raw_mac.lower() or None
                group = (row.get(group_column) if group_column else None) or row["path"]
                category = (row.get("category") or "").strip() or None
                vendor = (row.get("vendor") or "").strip() or None
                caps.append(LabelledCapture(p, label, mac, str(group), category, vendor))
        _check_levels(labels, caps)
        _check_devices(labels, caps)
    else:
        for d in sorted(x for x in root.iterdir() if x.is_dir()):
            for f in sorted(d.rglob("*")):
                if f.is_file() and is_capture_name(f):
                    caps.append(LabelledCapture(f, d.name, None, str(f.relative_to(root))))
    if not caps:
        raise DatasetError(f"{root}: empty dataset (no labels.csv rows and no label folders "
                           "with captures)")
    return LabelledDataset(root, label_column, caps)


def _check_devices(labels: Path, caps: Sequence[LabelledCapture]) -> None:
    """One labelled device per row: a capture with several rows (a whole-site capture) names
    a distinct MAC in each, else the same windows would be counted twice, or under two
    labels."""
    rows: dict[Path, list[tuple[int, str | None]]] = {}
    for i, c in enumerate(caps, start=2):
        rows.setdefault(c.path, []).append((i, c.mac))
    for path, rs in rows.items():
        if len(rs) < 2:
            continue
        first: dict[str | None, int] = {}
        for i, mac in rs:
            if mac is None:
                raise DatasetError(f"{labels}, row {i}: no mac, but capture "
                                   f"{os.path.relpath(path, labels.parent)!r} has "
                                   f"{len(rs)} rows; give each row its device's MAC")
            if mac in first:
                raise DatasetError(f"{labels}, row {i}: MAC {mac} of capture "
                                   f"{os.path.relpath(path, labels.parent)!r} is already "
                                   f"labelled in row {first[mac]}")
            first[mac] = i


def _check_levels(labels: Path, caps: Sequence[LabelledCapture]) -> None:
    """A label (model) belongs to one category and one vendor: two would make the category
    and vendor answers contradict the model answer."""
    for attr in ("category", "vendor"):
        seen: dict[str, set[str]] = {}
        for c in caps:
            value = getattr(c, attr)
            if value is not None:
                seen.setdefault(c.label, set()).add(value)
        for label, values in seen.items():
            if len(values) > 1:
                raise DatasetError(f"{labels}: {label!r} has {len(values)} {attr} values "
                                   f"({', '.join(sorted(values))}); a type has one {attr}")


def cache_dir() -> Path:
    from flockwatch.features.home import flockwatch_home

    return flockwatch_home() / "cache" / "flows"


def cached_flows(path: Path, cache: Path | None = None) -> tuple[pl.DataFrame, list[Problem]]:
    """Flows of one capture, from the Parquet cache keyed by content hash (and the extraction
    version: flows of an older extraction are never served) when present."""
    from flockwatch.features.schema import EXTRACTION_VERSION

    cache = cache or cache_dir()
    key = f"{file_hash(path)}-x{EXTRACTION_VERSION}"
    hit = cache / f"{key}.parquet"
    if hit.exists():
        df = pl.read_parquet(hit)
        return df.with_columns(pl.lit(str(path)).alias("source")), []
    df, problems = read_source_file(str(path))
    if not any(p.severity == "error" for p in problems):
        cache.mkdir(parents=True, exist_ok=True)
        write_parquet(df, hit)
    return df, problems


def _cached_flows(path: str) -> tuple[pl.DataFrame, list[Problem]]:
    return cached_flows(Path(path))


def dataset_flows(ds: LabelledDataset, *, workers: int | None = None,
                  on_file: Callable[[str], None] | None = None, client: Any = None
                  ) -> tuple[dict[Path, pl.DataFrame], list[Problem]]:
    """Flows per capture (cached), extracted in parallel: by threads here, or with a Dask
    ``client`` by the cluster's workers, each reading and filling the flow cache of its own
    ``FLOCKWATCH_HOME`` (shared when that is a shared folder; keyed by content either way)."""
    paths = list(dict.fromkeys(c.path for c in ds.captures))
    out: dict[Path, pl.DataFrame] = {}
    problems: list[Problem] = []
    if client is not None:
        from flockwatch.features.cluster import map_files

        for p, (df, probs) in zip(paths, map_files(client, _cached_flows,
                                                   [str(p) for p in paths], on_item=on_file),
                                  strict=True):
            out[p] = df
            problems.extend(probs)
        return out, problems
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for p, (df, probs) in zip(paths, pool.map(cached_flows, paths), strict=True):
            out[p] = df
            problems.extend(probs)
            if on_file:
                on_file(str(p))
    return out, problems


def within(flows: pl.DataFrame, start_s: float | None, end_s: float | None) -> pl.DataFrame:
    """The flows of each source starting from ``start_s`` and before ``end_s`` seconds after
    the source's first flow (None: no bound), both bounds measured from the same start."""
    if start_s is None and end_s is None:
        return flows
    t = pl.col("first_seen")
    t0 = t.min().over("source")
    keep = pl.lit(True)
    if start_s is not None:
        keep = keep & (t >= t0 + pl.duration(seconds=start_s))
    if end_s is not None:
        keep = keep & (t < t0 + pl.duration(seconds=end_s))
    return flows.filter(keep)


#: Computes windows of flows of many sources, e.g. on a cluster (``features.cluster.windows_on``).
WindowsFn = Callable[[pl.DataFrame, WindowSpec], pl.DataFrame]


def labelled_windows(ds: LabelledDataset, flows: dict[Path, pl.DataFrame], spec: WindowSpec,
                     *, max_seconds: float | None = None, after_seconds: float | None = None,
                     strict: bool = True, windows_fn: WindowsFn | None = None) -> pl.DataFrame:
    """Windows of each capture's labelled device, with ``label`` and ``group`` columns.

    ``max_seconds`` keeps only the first seconds of each capture (time-to-identify);
    ``after_seconds`` only its part after them (steady state, past setup).
    With labels.csv but no ``mac``, every device of the capture gets the label.
    ``windows_fn`` replaces ``windows`` (same rows: windows are per source).
    """
    # One windows() call over every capture: attribution and windows are per source (each
    # capture's flows carry its path as source), and one call over 442 captures costs about
    # what three per-capture calls do.
    paths = [p for p in dict.fromkeys(c.path for c in ds.captures)
             if flows.get(p) is not None and flows[p].height]
    if not paths:
        raise DatasetError(f"{ds.root}: no windows (captures without flows?)")
    allf = pl.concat([flows[p].with_columns(pl.lit(str(p)).alias("source")) for p in paths],
                     how="vertical_relaxed")
    allf = within(allf, after_seconds, max_seconds)
    per_source = (windows_fn or windows)(allf, spec).partition_by("source", as_dict=True,
                                                                   maintain_order=True)
    frames = []
    for c in ds.captures:
        w = per_source.get((str(c.path),))
        if w is None:
            if flows.get(c.path) is None or flows[c.path].height == 0:
                continue
            w = empty_windows()
        if c.mac:
            w = w.filter(pl.col("device_id") == c.mac)
            if w.height == 0 and strict:
                raise DatasetError(f"{c.path}: labelled MAC {c.mac} never appears as a device "
                                   "in this capture")
        frames.append(w.with_columns(pl.lit(c.label).alias("label"),
                                     pl.lit(c.group).alias("group"),
                                     pl.lit(str(c.path)).alias("capture")))
    if not frames:
        raise DatasetError(f"{ds.root}: no windows (captures without flows?)")
    return pl.concat(frames, how="vertical_relaxed")


def late_windows(ds: LabelledDataset, flows: dict[Path, pl.DataFrame], spec: WindowSpec,
                 after: float = 60.0, *, strict: bool = False,
                 windows_fn: WindowsFn | None = None) -> dict[str, pl.DataFrame]:
    """Windows of each capture's part after its first ``after`` seconds, keyed
    ``after_{after}s``: steady-state rows (no DHCP, no first-boot lookups) that train the
    model beside whole captures and their first seconds, so that a model trained on setup
    captures still names a device met in operation; captures no longer than ``after`` give
    none."""
    return {f"after_{after:g}s": labelled_windows(ds, flows, spec, after_seconds=after,
                                                  strict=strict, windows_fn=windows_fn)}


def early_windows(ds: LabelledDataset, flows: dict[Path, pl.DataFrame], spec: WindowSpec,
                  seconds: Sequence[float] = (10, 30, 60), *, strict: bool = False,
                  windows_fn: WindowsFn | None = None) -> dict[str, pl.DataFrame]:
    """Windows of only the first ``s`` seconds of each capture, for every length in
    ``seconds``, keyed ``first_{s}s``: extra training rows (same label and group as their
    capture) so that one classifier names a device from its first seconds of traffic as well
    as from whole windows, and the sets that measure it."""
    return {f"first_{s:g}s": labelled_windows(ds, flows, spec, max_seconds=s, strict=strict,
                                              windows_fn=windows_fn)
            for s in seconds}


#: Slices of each capture whose evidence joins the whole capture's in training
#: (``labelled_evidence``): its first 30 s (a device met mid-setup, a short capture) and its
#: part after the first 60 s (steady state: no DHCP, no first-boot lookups).
EVIDENCE_VIEWS: dict[str, tuple[float | None, float | None]] = {
    "whole": (None, None), "first_30s": (None, 30.0), "after_60s": (60.0, None)}


def capture_evidence(flows: dict[Path, pl.DataFrame], start_s: float | None = None,
                     end_s: float | None = None) -> pl.DataFrame:
    """Product evidence (``features.evidence``) of every device of every capture, over the
    flows starting from ``start_s`` and before ``end_s`` seconds into the capture (None: its
    start, its end): ``capture``, ``device_id``, ``evidence``. One pass over all captures
    (attribution is per capture)."""
    from flockwatch.features.evidence import device_evidence

    parts = [df.with_columns(pl.lit(str(p)).alias("source")) for p, df in flows.items()
             if df is not None and df.height]
    if not parts:
        return pl.DataFrame(schema={"capture": pl.String, "device_id": pl.String,
                                    "evidence": pl.List(pl.String)})
    allf = pl.concat(parts, how="vertical_relaxed")
    return device_evidence(within(allf, start_s, end_s)).rename({"source": "capture"})


def labelled_evidence(ds: LabelledDataset, flows: dict[Path, pl.DataFrame],
                      views: dict[str, tuple[float | None, float | None]] | None = None,
                      tables: Mapping[str, pl.DataFrame] | None = None
                      ) -> dict[tuple[str, str], list[list[str]]]:
    """Product evidence of each labelled device, keyed ``(group, label)``: a token list per
    view of its capture (``EVIDENCE_VIEWS``; the whole capture first). Views that hold no
    flow of the device are left out; devices of one label in one group (or, without a
    ``mac``, every device of the capture) are pooled. ``tables``: ``capture_evidence`` of
    some views, by view name, where the caller has them already."""
    views = views or EVIDENCE_VIEWS
    per_view: list[dict[str, dict[str, list[str]]]] = []  # capture -> device -> tokens
    for name, (start_s, end_s) in views.items():
        ev = (tables or {}).get(name)
        if ev is None:
            ev = capture_evidence(flows, start_s, end_s)
        table: dict[str, dict[str, list[str]]] = {}
        for cap, dev, ts in ev.iter_rows():
            table.setdefault(cap, {})[dev] = ts
        per_view.append(table)
    out: dict[tuple[str, str], list[list[str]]] = {}
    for c in ds.captures:
        key = (str(c.group), c.label)
        mine = []
        for table in per_view:
            devices = table.get(str(c.path), {})
            if c.mac:
                toks = devices.get(c.mac)
            else:
                toks = sorted({t for ts in devices.values() for t in ts}) if devices else None
            if toks is not None:
                mine.append(list(toks))
        if not mine:
            continue
        if key in out and len(out[key]) == len(mine):
            out[key] = [sorted(set(a) | set(b)) for a, b in zip(out[key], mine, strict=True)]
        else:
            out.setdefault(key, []).extend(mine)
    return out


__all__ = ["DatasetError", "EVIDENCE_VIEWS", "LabelledDataset", "cached_flows", "dataset_flows",
           "file_hash", "capture_evidence", "early_windows", "labelled_evidence", "late_windows",
           "labelled_windows", "load_dataset", "normalise_mac"]
