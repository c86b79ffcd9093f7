"""Labelling whole-site captures from a device table: ``flockwatch datasets label``.

Public IoT datasets (Mon(IoT)r, UNSW, YourThings) come as captures of a whole lab or home,
each holding many devices, plus one table naming every device by MAC. flockwatch's labelled
sets have one labelled device per ``labels.csv`` row. This module turns the first into the
second: each capture's devices are found the way every other command finds them (cached
NFStream flows, then ``features.attribution``; a device is keyed by its MAC where the capture
has layer 2), and each (capture, MAC) the table lists becomes a row, grouped by its capture
so that no split ever puts one capture's devices on both sides.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flockwatch.datasets.labelled import DatasetError, cached_flows, normalise_mac
from flockwatch.datasets.split import _relative
from flockwatch.features.captures import is_capture_name
from flockwatch.features.flows import Problem, expand_sources
from flockwatch.features.output import write_atomic

#: labels.csv columns written, in this order (``group``: the capture, so splits keep a
#: capture's devices together)
LABEL_COLUMNS = ("path", "device_type", "mac", "category", "vendor", "group")
#: the device-type column's fallback when the table has no ``device_type`` (Mon(IoT)r and
#: YourThings name the product in ``name``)
TYPE_FALLBACK = "name"

@dataclass(frozen=True)
class Device:
    mac: str
    device_type: str
    category: str | None
    vendor: str | None
    #: devices.csv row (header is row 1)
    row: int


def read_devices(path: str | os.PathLike[str], type_column: str = "device_type"
                 ) -> dict[str, Device]:
    """The device table, keyed by normalised MAC; ``DatasetError`` naming the file (and row)
    for a missing file or column, a malformed MAC, an empty type, a MAC listed twice with
    different types, or a type given two categories or vendors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, expected a devices CSV file") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file (expected a devices CSV)") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    # Column names are matched whatever their case ("MAC", "Name" in published tables).
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    reader.fieldnames = cols
    type_column = type_column.strip().lower()
    has = ", ".join(c for c in cols if c) or "none"
    if "mac" not in cols:
        raise DatasetError(f"{path}: no mac column (has {has})")
    tcol = type_column
    if tcol not in cols:
        if type_column == "device_type" and TYPE_FALLBACK in cols:
            tcol = TYPE_FALLBACK
        else:
            alt = f" or {TYPE_FALLBACK}" if type_column == "device_type" else ""
            raise DatasetError(f"{path}: no {type_column}{alt} column (has {has})")
    devices: dict[str, Device] = {}
    for i, row in enumerate(reader, start=2):
        raw = (row.get("mac") or "").strip()
        if not raw and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        mac = normalise_mac(raw)
        if mac is None:
            what = "empty mac" if not raw else (
                f"malformed MAC {raw!r} (expected aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or "
                "aabb.ccdd.eeff)")
            raise DatasetError(f"{path}, row {i}: {what}")
        dtype = (row.get(tcol) or "").strip()
        if not dtype:
            raise DatasetError(f"{path}, row {i}: {mac} has an empty {tcol}")
        dev = Device(mac, dtype, (row.get("category") or "").strip() or None,
                     (row.get("vendor") or "").strip() or None, i)
        first = devices.get(mac)
        if first is not None:
            if first.device_type != dev.device_type:
                raise DatasetError(
                    f"{path}, row {i}: MAC {mac} is {dev.device_type!r} here but "
                    f"{first.device_type!r} in row {first.row}; a MAC is one device")
            continue  # the same device listed again
        devices[mac] = dev
    if not devices:
        raise DatasetError(f"{path}: no devices (the table has a header but no rows)")
    for attr in ("category", "vendor"):
        seen: dict[str, set[str]] = {}
        for d in devices.values():
            value = getattr(d, attr)
            if value is not None:
                seen.setdefault(d.device_type, set()).add(value)
        for dtype, values in sorted(seen.items()):
            if len(values) > 1:
                raise DatasetError(f"{path}: {dtype!r} has {len(values)} {attr} values "
                                   f"({', '.join(sorted(values))}); a type has one {attr}")
    return devices


def capture_files(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Problem]]:
    """Capture files under ``sources`` (folders searched recursively for capture names; files
    taken as given), and what could not be searched."""
    files: list[Path] = []
    problems: list[Problem] = []
    for src in sources:
        found, bad = expand_sources([src])
        if Path(src).is_dir():
            found = [f for f in found if is_capture_name(Path(f))]
            if not found and not bad:
                bad = [Problem(str(src), "folder holds no captures (.pcap, .pcapng, .cap)",
                               "notice")]
        files += [Path(f) for f in found]
        problems += bad
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


@dataclass
class CaptureDevices:
    path: Path
    #: every device the capture holds, keyed by MAC: its flows
    seen: dict[str, int]
    #: the listed devices among them, in MAC order
    labelled: list[Device]
    readable: bool


@dataclass
class LabelResult:
    captures: list[CaptureDevices]
    problems: list[Problem] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(c.labelled) for c in self.captures)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def devices_in(path: Path) -> tuple[dict[str, int], list[Problem]]:
    """Flows per device (MAC) of one capture, from the flow cache that training reads too."""
    import polars as pl

    from flockwatch.features.attribution import attribute

    flows, problems = cached_flows(path)
    if flows.height == 0:
        return {}, problems
    att = attribute(flows).filter(pl.col("mac").is_not_null())
    counts = att.group_by("device_id").len()
    return {str(k): int(v) for k, v in counts.iter_rows()}, problems


def label_captures(sources: Sequence[str | os.PathLike[str]], devices: dict[str, Device], *,
                   devices_name: str = "devices.csv", workers: int | None = None,
                   on_start: Callable[[int], None] | None = None,
                   on_file: Callable[[str], None] | None = None) -> LabelResult:
    """Each capture's listed devices. A capture that cannot be read is an ``error`` problem,
    one where no listed MAC appears a ``notice``: the batch goes on past both."""
    files, problems = capture_files(sources)
    if on_start:
        on_start(len(files))
    out: list[CaptureDevices] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1,
                                                   len(files) or 1))) as pool:
        for f, (seen, probs) in zip(files, pool.map(devices_in, files), strict=True):
            problems += probs
            readable = not any(p.severity == "error" for p in probs)
            labelled = [devices[m] for m in sorted(seen) if m in devices]
            if readable and not labelled:
                problems.append(Problem(str(f), f"none of the {len(devices)} devices in "
                                        f"{devices_name} appears ({len(seen)} devices seen)",
                                        "notice"))
            out.append(CaptureDevices(f, seen, labelled, readable))
            if on_file:
                on_file(str(f))
    return LabelResult(out, problems)


def label_rows(result: LabelResult, out_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """labels.csv rows, paths as seen from ``out_dir`` (relative, so the folder loads with
    ``load_dataset`` wherever it and the captures move together)."""
    rows = []
    for c in result.captures:
        rel = _relative(c.path, Path(out_dir))
        for d in c.labelled:
            rows.append({"path": rel, "device_type": d.device_type, "mac": d.mac,
                         "category": d.category or "", "vendor": d.vendor or "", "group": rel})
    return rows


def write_labels(result: LabelResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/labels.csv`` atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(label_rows(result, out_dir))
    text = buf.getvalue()
    target = Path(out_dir) / "labels.csv"
    write_atomic(target, lambda fh: fh.write(text))
    return target


__all__ = ["LABEL_COLUMNS", "CaptureDevices", "Device", "LabelResult", "capture_files",
           "devices_in", "label_captures", "label_rows", "normalise_mac", "read_devices",
           "write_labels"]
