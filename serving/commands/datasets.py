"""``flockwatch datasets``: write the synthetic site, split a labelled set, label whole-site
captures from a device table."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.common import (
    MAX_SYNTH_HOURS,
    ScoreFormat,
    SourcesArg,
    check_output,
    fail,
    report_problems,
    require_sources,
    seconds_parser,
)
from flockwatch.serving.options import show
from flockwatch.serving.progress import reading

app = typer.Typer(help="Labelled capture sets and the synthetic IoT/OT site.",
                  no_args_is_help=True)


@app.command("synthesize")
def datasets_synthesize(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write into.")],
    hours: Annotated[float, typer.Option(
        parser=seconds_parser(MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the attack capture in hours.")] = 2.0,
    learning_hours: Annotated[float | None, typer.Option(
        parser=seconds_parser(MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the attack-free learning capture (default: --hours).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    attacks: Annotated[list[str] | None, typer.Option(
        "--attacks", help="Attack kinds to inject (repeat the option); default all; "
        "'none' for none.")] = None,
) -> None:
    """Write a synthetic IoT/OT site: learning.pcap, attacks.pcap, labels.csv, attacks.csv."""
    from flockwatch.datasets.synth import ATTACK_KINDS, synthesize

    check_output(output, "--output", folder=True)
    kinds = list(ATTACK_KINDS) if not attacks else [] if attacks == ["none"] else attacks
    try:
        caps = synthesize(output, hours=hours, learning_hours=learning_hours, seed=seed,
                          attacks=kinds)
    except ValueError as exc:
        fail(str(exc))
    for c in caps:
        typer.echo(f"{c.path}: {c.packets} packets, attacks: "
                   f"{', '.join(a.kind for a in c.attacks) or 'none'}")
    typer.echo(f"{output / 'labels.csv'}, {output / 'attacks.csv'}")


class SplitByOpt(StrEnum):
    capture = "capture"
    person = "person"
    unit = "unit"


@app.command("split")
def datasets_split(
    dataset_dir: Annotated[Path, typer.Argument(help="Folder with captures and labels.csv "
                                                "(or one sub-folder per label).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write "
                      "train/labels.csv and test/labels.csv into.")],
    test_size: Annotated[float, typer.Option(
        help="Share of each type's captures to hold out for testing.")] = 0.25,
    by: Annotated[SplitByOpt, typer.Option(
        help="What is held out whole: a capture; every capture one person made of a type "
             "(labels.csv 'person'); or every capture of one unit of a type "
             "('device_instance', else 'mac').")] = SplitByOpt.capture,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same split.")] = 0,
    label_column: Annotated[str, typer.Option(help="labels.csv column to stratify by.")]
    = "device_type",
) -> None:
    """Hold captures out for an honest evaluation: write train and test labels.csv files that
    point at the original captures (nothing is copied).

    Example: flockwatch datasets split ../shared/data/iot-sentinel --by unit -o split/ ;
    flockwatch train classifier split/train --register held ;
    flockwatch evaluate split/test --model models:/held/1
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.datasets.split import split_dataset, write_split

    try:
        sp = split_dataset(dataset_dir, test_size=test_size, by=by.value, seed=seed,
                           label_column=label_column)
        train_csv, test_csv = write_split(sp, output)
    except (DatasetError, ValueError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"train: {len(sp.train)} captures of {len(sp.types('train'))} types -> "
               f"{train_csv}")
    typer.echo(f"test: {len(sp.test)} captures of {len(sp.types('test'))} types -> {test_csv}")
    if sp.train_only:
        why = {"capture": "3 or more captures", "person": "captures by two or more persons "
               "and 3 or more captures", "unit": "two or more units and 3 or more captures"}
        typer.echo(f"only in train (a type needs {why[by.value]} to be held out): "
                   + ", ".join(sp.train_only))


@app.command("label")
def datasets_label(
    devices: Annotated[Path, typer.Option(
        "--devices", help="Device table (CSV): mac (any usual notation), the type column, "
        "optional category and vendor; other columns are ignored.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write labels.csv "
                      "into (its paths reach the captures from there; nothing is copied).")],
    sources: SourcesArg = None,
    type_column: Annotated[str, typer.Option(
        help="Device table column naming the device type; with the default, a table without "
             "device_type uses its name column.")] = "device_type",
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label whole-site captures from a device table: one labels.csv row per (capture, MAC)
    the table lists, grouped by capture, ready for train classifier, split and evaluate.

    Captures where no listed device appears are listed at the end and skipped; captures that
    cannot be read are listed too and make the exit status 1 (as in extract); nothing
    labelled at all is an error and writes no labels.csv.

    Example: flockwatch datasets label lab/*.pcap --devices devices.csv -o lab-labelled
    """
    from flockwatch.datasets.label import label_captures, read_devices, write_labels
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.output import to_json

    sources = require_sources(sources)
    check_output(output, "--output", folder=True)
    try:
        table = read_devices(devices, type_column)
    except DatasetError as exc:
        fail(str(exc))
    with reading(quiet) as (on_start, on_file):
        result = label_captures(sources, table, devices_name=str(devices),
                                on_start=on_start, on_file=on_file)
    target = write_labels(result, output) if result.rows else None
    if format is ScoreFormat.json:
        typer.echo(to_json({
            "labels": None if target is None else str(target),
            "captures": len(result.captures),
            "rows": result.rows,
            "devices_per_capture": [
                {"path": str(c.path), "devices_seen": len(c.seen), "readable": c.readable,
                 "labelled": [{"mac": d.mac, "device_type": d.device_type,
                               "category": d.category, "vendor": d.vendor, "flows": c.seen[d.mac]}
                              for d in c.labelled]}
                for c in result.captures],
            "problems": [{"source": p.source, "severity": p.severity, "message": p.message}
                         for p in result.problems],
        }, indent=2))
    else:
        from flockwatch.serving.render import labels_table

        typer.echo(labels_table(result), nl=False)
        if target is not None:
            typer.echo(f"{result.rows} row{'' if result.rows == 1 else 's'} -> {target}")
    report_problems(result, quiet)
    if target is None:
        fail(f"{show(output / 'labels.csv')}: not written: no device of {show(devices)} appears "
             f"in the {sum(c.readable for c in result.captures)} readable capture(s)")
    if result.errors:
        raise typer.Exit(1)
