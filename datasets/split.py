"""Held-out splits of a labelled capture set: ``flockwatch datasets split``.

A model evaluated on captures it was trained on scores itself on memory. The split writes a
``train/labels.csv`` and a ``test/labels.csv`` whose paths point at the original captures (no
copying), so that ``train classifier`` on one and ``evaluate`` on the other is an honest
held-out figure. Three ways to hold out, from easiest to hardest for a model:

- ``capture``: whole captures (sessions) of every type;
- ``person``: every capture one person made of a type (another person's setup routine);
- ``unit``: every capture of one physical unit of a type (a new unit of a known model, what a
  sensor at a customer's site meets).

The split is stratified per type: every type keeps at least two captures in train (what
``train classifier`` needs), and goes into test only where it has more than that (and, by
person or unit, more than one person or unit). Byte-identical captures are one capture: a
file whose content is on the train side never appears in test, whatever its path.
"""

from __future__ import annotations

import csv
import io
import operator
import os
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from flockwatch.datasets.labelled import DatasetError, file_hash, load_dataset
from flockwatch.features.output import write_atomic

#: A type keeps at least this many captures in train (capture-separated validation needs 2).
MIN_TRAIN_CAPTURES = 2
#: labels.csv columns naming who made a capture, and which unit it is of (first present wins;
#: ``device_instance`` names units in IoT Sentinel, where a type may have two units).
PERSON_COLUMNS = ("person",)
UNIT_COLUMNS = ("device_instance", "unit", "mac")


class SplitBy(StrEnum):
    capture = "capture"
    person = "person"
    unit = "unit"


@dataclass
class DatasetSplit:
    """The rows of labels.csv on each side (paths as written in the original labels.csv)."""

    root: Path
    columns: list[str]
    label_column: str
    by: SplitBy
    train: list[dict[str, str]]
    test: list[dict[str, str]]
    #: types kept whole in train (too few captures, persons or units to hold one out)
    train_only: list[str] = field(default_factory=list)
    #: the labels.csv column the groups came from (None when splitting by capture)
    group_column: str | None = None

    def types(self, side: str) -> list[str]:
        rows = self.train if side == "train" else self.test
        return sorted({r[self.label_column] for r in rows})


def _rows(root: Path, label_column: str) -> tuple[list[str], list[dict[str, str]]]:
    """The labels.csv rows (every column kept), or rows made up from label folders."""
    ds = load_dataset(root, label_column)  # validates rows and paths, names bad ones
    labels = root / "labels.csv"
    if labels.exists():
        with labels.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [{k: (v or "") for k, v in r.items() if k is not None} for r in reader]
            return list(reader.fieldnames or []), rows
    return ["path", label_column], [
        {"path": str(c.path.relative_to(root)), label_column: c.label} for c in ds.captures]


def _group_column(columns: list[str], by: SplitBy, labels: Path) -> str | None:
    if by is SplitBy.capture:
        return None
    wanted = PERSON_COLUMNS if by is SplitBy.person else UNIT_COLUMNS
    for c in wanted:
        if c in columns:
            return c
    raise DatasetError(f"{labels}: no {' or '.join(wanted)} column to split by {by.value} "
                       f"(has {', '.join(columns) or 'none'})")


def _pick_test(sizes: list[int], target: float, rng: np.random.Generator) -> set[int]:
    """Indexes of the groups held out, their captures as close to ``target`` as can be: at
    least one group when any can go, never every group, and never so many that fewer than
    ``MIN_TRAIN_CAPTURES`` stay in train. A few groups (persons, units): the best subset,
    ties broken at random; many (captures): taken in a random order while each brings the
    count closer to the target."""
    from itertools import combinations

    total = sum(sizes)
    order = [int(i) for i in rng.permutation(len(sizes))]
    if len(sizes) <= 10:
        best: tuple[float, int] | None = None
        chosen: set[int] = set()
        for k in range(1, len(sizes)):
            for combo in combinations(order, k):
                held = sum(sizes[i] for i in combo)
                if total - held < MIN_TRAIN_CAPTURES:
                    continue
                rank = (abs(held - target), k)
                if best is None or rank < best:
                    best, chosen = rank, set(combo)
        return chosen
    chosen = set()
    held = 0
    for i in order:
        if total - held - sizes[i] < MIN_TRAIN_CAPTURES or len(chosen) + 1 == len(sizes):
            continue
        if chosen and abs(held + sizes[i] - target) >= abs(held - target):
            continue
        chosen.add(i)
        held += sizes[i]
    return chosen


def split_dataset(root: str | os.PathLike[str], *, test_size: float = 0.25,
                  by: SplitBy | str = SplitBy.capture, seed: int = 0,
                  label_column: str = "device_type") -> DatasetSplit:
    """Split a labelled capture set into train and test rows, stratified per type.

    Raises ``DatasetError`` (one line, naming the file) for a bad dataset or a missing
    person/unit column, ``ValueError`` for a ``test_size`` outside (0, 1).
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"--test-size {test_size:g}: give a share in (0, 1)")
    by = SplitBy(by)
    root = Path(root)
    columns, rows = _rows(root, label_column)
    gcol = _group_column(columns, by, root / "labels.csv")
    digest = {p: file_hash(root / p) for p in dict.fromkeys(r["path"] for r in rows)}
    # The unit held out: a capture's content, or one person's / unit's captures of a type.
    key = [digest[r["path"]] if gcol is None else r[gcol].strip() for r in rows]
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_label[r[label_column].strip()].append(i)
    rng = np.random.default_rng(seed)
    test_rows: set[int] = set()
    train_only = []
    for label in sorted(by_label):
        idx = by_label[label]
        groups: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            groups[key[i]].append(i)
        names = sorted(groups)
        sizes = [len({digest[rows[i]["path"]] for i in groups[g]}) for g in names]
        chosen = _pick_test(sizes, test_size * sum(sizes), rng)
        if not chosen:
            train_only.append(label)
        for k in chosen:
            test_rows.update(groups[names[k]])
    # A capture labelled for two devices, or copied under two names, is on one side only:
    # content that stays in train is taken out of test.
    train_hashes = {digest[r["path"]] for i, r in enumerate(rows) if i not in test_rows}
    test_rows = {i for i in test_rows if digest[rows[i]["path"]] not in train_hashes}
    train = [r for i, r in enumerate(rows) if i not in test_rows]
    test = [r for i, r in enumerate(rows) if i in test_rows]
    tested = {r[label_column].strip() for r in test}
    train_only = sorted(set(train_only) | (set(by_label) - tested))
    return DatasetSplit(root, columns, label_column, SplitBy(by), train, test, train_only, gcol)


def _relative(path: Path, start: Path) -> str:
    """``path`` as seen from ``start`` (relative where possible, so the split folder and the
    dataset move together; absolute across drives)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()
    except ValueError:
        return os.path.abspath(path)


def write_split(split: DatasetSplit, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``out_dir/train/labels.csv`` and ``out_dir/test/labels.csv`` (atomically), each
    path rewritten to reach the original capture from its new folder."""
    out = Path(out_dir)
    written = []
    for side, rows in (("train", split.train), ("test", split.test)):
        folder = out / side
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=split.columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": _relative(split.root / r["path"], folder)})
        text = buf.getvalue()
        target = folder / "labels.csv"
        write_atomic(target, operator.methodcaller("write", text))
        written.append(target)
    return written[0], written[1]


__all__ = ["DatasetSplit", "SplitBy", "split_dataset", "write_split"]
