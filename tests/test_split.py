"""`flockwatch datasets split`: held-out train/test labels.csv files over real IoT Sentinel
captures (paths point at the originals; nothing is copied)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flockwatch.datasets.labelled import file_hash, load_dataset
from flockwatch.serving.cli import app

# Two units each (EdimaxCam, WeMoSwitch), two persons (Aria, HueSwitch), one person and one
# unit (Lightify), and a type with too few captures to hold one out (D-LinkCam, 3 kept).
TYPES = ["EdimaxCam", "WeMoSwitch", "Aria", "HueSwitch", "Lightify", "D-LinkCam"]


def sentinel_subset(shared: Path, dest: Path, keep_dlink: int = 2) -> Path:
    src = shared / "iot-sentinel"
    if not (src / "labels.csv").exists():
        pytest.skip(f"IoT Sentinel captures not found under {src}")
    dest.mkdir(parents=True, exist_ok=True)
    with (src / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["device_type"] in TYPES]
    dlink = [r for r in rows if r["device_type"] == "D-LinkCam"][:keep_dlink]
    rows = [r for r in rows if r["device_type"] != "D-LinkCam"] + dlink
    for r in rows:
        folder = r["path"].split("/")[0]
        if not (dest / folder).exists():
            (dest / folder).symlink_to(src / folder)
    with (dest / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def read_rows(labels: Path) -> list[dict[str, str]]:
    with labels.open() as fh:
        return list(csv.DictReader(fh))


def split(ds: Path, out: Path, *args: str) -> tuple[list[dict[str, str]], list[dict[str, str]],
                                                     str]:
    r = CliRunner().invoke(app, ["datasets", "split", str(ds), "-o", str(out), *args])
    assert r.exit_code == 0, r.output
    return read_rows(out / "train" / "labels.csv"), read_rows(out / "test" / "labels.csv"), \
        r.output


@pytest.mark.parametrize("by,column", [("capture", None), ("person", "person"),
                                       ("unit", "device_instance")])
def test_split_is_disjoint_stratified_and_points_at_the_originals(shared_data, tmp_path, by,
                                                                   column):
    ds = sentinel_subset(shared_data, tmp_path / "ds")
    out = tmp_path / "split"
    train, test, text = split(ds, out, "--by", by, "--test-size", "0.25", "--seed", "3")
    original = read_rows(ds / "labels.csv")
    # Every row lands on exactly one side, with every column kept.
    assert len(train) + len(test) == len(original)
    assert set(train[0]) == set(original[0])
    # Paths resolve to the original captures (no copies) from each new folder.
    for side, rows in (("train", train), ("test", test)):
        loaded = load_dataset(out / side)
        assert len(loaded.captures) == len(rows)
        for cap, row in zip(loaded.captures, rows, strict=True):
            assert cap.path.is_file() and not str(row["path"]).startswith("/")
            orig = next(o for o in original if o["repetition"] == row["repetition"]
                        and o["device_type"] == row["device_type"]
                        and o["person"] == row["person"]
                        and o["device_instance"] == row["device_instance"])
            assert os.path.samefile(cap.path, ds / orig["path"])
        assert not any(p.suffix == ".pcap" for p in (out / side).rglob("*"))
    # Disjoint by content: no capture's bytes on both sides.
    train_hashes = {file_hash(out / "train" / r["path"]) for r in train}
    assert not train_hashes & {file_hash(out / "test" / r["path"]) for r in test}
    # Every type trains, with at least two captures; held out where it has enough.
    counts = {t: sum(r["device_type"] == t for r in train) for t in TYPES}
    assert min(counts.values()) >= 2
    tested = {r["device_type"] for r in test}
    assert "D-LinkCam" not in tested  # 2 captures: both needed in train
    assert "D-LinkCam" in text and "only in train" in text
    if by == "capture":
        assert tested == set(TYPES) - {"D-LinkCam"}
        assert 0.15 < len(test) / len(original) < 0.35
    else:
        # The held-out person or unit of a type is never seen in training for that type.
        seen = {(r["device_type"], r[column]) for r in train}
        assert not any((r["device_type"], r[column]) in seen for r in test)
        multi = {"person": {"EdimaxCam", "WeMoSwitch", "Aria", "HueSwitch"},
                 "unit": {"EdimaxCam", "WeMoSwitch"}}[by]
        assert tested == multi
        assert "Lightify" in text  # one person, one unit: only in train


def test_split_is_repeatable_and_seeded(shared_data, tmp_path):
    ds = sentinel_subset(shared_data, tmp_path / "ds")
    a = split(ds, tmp_path / "a", "--seed", "1")[1]
    b = split(ds, tmp_path / "b", "--seed", "1")[1]
    c = split(ds, tmp_path / "c", "--seed", "2")[1]
    assert [r["path"] for r in a] == [r["path"] for r in b]
    assert [r["path"] for r in a] != [r["path"] for r in c]


def test_split_keeps_byte_identical_copies_together(shared_data, tmp_path):
    """A capture copied under another name is the same capture: both copies on one side."""
    ds = sentinel_subset(shared_data, tmp_path / "src")
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = [r for r in read_rows(ds / "labels.csv") if r["device_type"] == "Aria"]
    for r in rows:
        shutil.copy(ds / r["path"], flat / r["path"].replace("/", "_"))
    shutil.copy(ds / rows[0]["path"], flat / "copy-of-first.pcap")
    lines = ["path,device_type,mac"] + [f"{r['path'].replace('/', '_')},Aria,{r['mac']}"
                                        for r in rows]
    lines.append(f"copy-of-first.pcap,Aria,{rows[0]['mac']}")
    (flat / "labels.csv").write_text("\n".join(lines) + "\n")
    for seed in range(6):
        train, test, _ = split(flat, tmp_path / f"s{seed}", "--seed", str(seed))
        names = {Path(r["path"]).name for r in test}
        first = rows[0]["path"].replace("/", "_")
        assert (first in names) == ("copy-of-first.pcap" in names)


def test_split_bad_input(tmp_path, shared_data):
    runner = CliRunner()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.pcap").write_bytes(b"x")
    (tmp_path / "ds" / "labels.csv").write_text("path,device_type\na.pcap,cam\n")
    r = runner.invoke(app, ["datasets", "split", str(tmp_path / "ds"), "--by", "person",
                            "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "no person column to split by person" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["datasets", "split", str(tmp_path / "ds"), "--test-size", "1.5",
                            "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "--test-size 1.5: give a share in (0, 1)" in r.output
    r = runner.invoke(app, ["datasets", "split", str(tmp_path / "nowhere"),
                            "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "no such dataset folder" in r.output
    assert not (tmp_path / "out").exists()


def test_split_help():
    r = CliRunner().invoke(app, ["datasets", "split", "--help"])
    assert r.exit_code == 0
    for opt in ("--test-size", "--by", "--seed", "--output"):
        assert opt in r.output


def test_labels_with_paths_outside_the_folder(shared_data, tmp_path):
    """labels.csv may name captures by absolute path or outside its folder (as a split's
    do): the dataset loads and has a fingerprint (which used to raise for absolute paths)."""
    ds = sentinel_subset(shared_data, tmp_path / "ds")
    rows = [r for r in read_rows(ds / "labels.csv") if r["device_type"] == "Aria"][:3]
    other = tmp_path / "other"
    other.mkdir()
    lines = ["path,device_type,mac"] + [f"{(ds / r['path']).resolve()},Aria,{r['mac']}"
                                        for r in rows]
    (other / "labels.csv").write_text("\n".join(lines) + "\n")
    loaded = load_dataset(other)
    assert len(loaded.captures) == 3 and len(loaded.fingerprint()) == 64
