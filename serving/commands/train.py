"""``flockwatch train``: the classifier and the behavioural baseline, logged and registered in
MLflow. The training code is imported inside the commands only: serving never imports it
elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.cluster import ClusterOpt, cluster_session
from flockwatch.serving.commands.common import (
    SourcesArg,
    TrackingOpt,
    WindowOpt,
    check_reject_quantile,
    duration_parser,
    fail,
    int_parser,
    one_line,
    require_sources,
)
from flockwatch.serving.progress import counting_files, phases

app = typer.Typer(help="Train models, log them to MLflow, register them.",
                  no_args_is_help=True)


@app.command("classifier")
def train_classifier_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Folder with captures and labels.csv "
                                                "(or one sub-folder per label).")],
    label_column: Annotated[str, typer.Option(help="labels.csv column to learn.")] = "device_type",
    group_column: Annotated[str | None, typer.Option(
        help="labels.csv column grouping captures for splits (default: each capture).")] = None,
    window: WindowOpt = 300.0,
    folds: Annotated[int, typer.Option(parser=int_parser(2, 100), metavar="N",
                                       help="Capture-grouped cross-validation folds.")] = 4,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "flockwatch-classifier",
    register: Annotated[str | None, typer.Option(help="Register the model under this name.")]
    = None,
    promote: Annotated[bool, typer.Option(help="Set the 'champion' alias on the new version.")]
    = False,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")] = 0,
    early_seconds: Annotated[str, typer.Option(
        help="Also train on the first seconds of each capture (comma-separated lengths, or "
             "'none'), so devices are named from their first traffic.")] = "10,30,60",
    reject_quantile: Annotated[float, typer.Option(
        help="Open-set trade-off: the share of held-out captures of known types whose product "
             "evidence the 'unknown' rule would call contradictory (0 turns 'unknown' off). "
             "Higher values report more never-seen products as unknown and reject more known "
             "ones.")] = 0.04,
    coverage: Annotated[float, typer.Option(
        min=0.5, max=0.999, help="Prediction sets ('candidates'): the share of devices of known "
        "types whose type the set holds (split-conformal on held-out captures).")] = 0.95,
    site_shift: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of the behaviour classifier's answer not trusted against "
        "product evidence (at a new site, timing and volume mislead); 0 trusts it fully, 1 "
        "ignores it.")] = 0.8,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Skip the cross-validation and open-set runs that only the report "
        "needs (ten of the eleven models a full run trains): the same model, with the same "
        "rejection thresholds, without its figures.")] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, help="Kept for scripts; has no effect: models train one after another, "
        "each on one thread (two LightGBM trainings at once crashed).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    tracking_uri: TrackingOpt = None,
    cluster: ClusterOpt = None,
    dask_min_windows: Annotated[int | None, typer.Option(
        min=0, metavar="N", help="With --cluster: from this many training windows on, the "
        "final fits go through LightGBM's Dask interface (default 1000000; docs/scaling.md)."
    )] = None,
) -> None:
    """Train a device-type classifier on labelled captures; log and register it in MLflow.

    Example: flockwatch train classifier ../shared/data/iot-sentinel --register sentinel
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import check_tracking_server
    from flockwatch.training.classifier import train_classifier

    try:
        check_tracking_server(tracking_uri)  # a server that is down fails before the training
        early = [] if early_seconds.strip().lower() in ("", "none") else [
            parse_duration(x) or 0.0 for x in early_seconds.split(",")]
        if any(s <= 0 for s in early):
            raise ValueError(f"--early-seconds {early_seconds!r}: give positive lengths or 'none'")
        check_reject_quantile(reject_quantile)
        with cluster_session(cluster, quiet) as client, phases(quiet) as progress:
            out = train_classifier(dataset_dir, label_column=label_column, early_seconds=early,
                                   group_column=group_column,
                                   window_s=parse_duration(window) or 300.0, n_folds=folds,
                                   register_name=register, promote=promote,
                                   experiment=experiment, tracking_uri=tracking_uri, seed=seed,
                                   reject_quantile=reject_quantile, quick=quick,
                                   progress=progress, n_jobs=jobs, coverage=coverage,
                                   site_shift=site_shift, client=client,
                                   dask_min_windows=dask_min_windows)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    m = out.metrics
    if quick:
        typer.echo(f"--quick: {len(out.classes)} classes; no cross-validation or open-set "
                   "figures (train without --quick for them)")
    else:
        typer.echo(f"capture-separated CV: macro F1 {m['macro_f1']:.3f}, accuracy "
                   f"{m['accuracy']:.3f} over {len(out.classes)} classes")
        if "set_coverage" in m:
            typer.echo(f"  category right {m['category_accuracy']:.3f}, vendor right "
                       f"{m['vendor_accuracy']:.3f}; prediction sets: coverage "
                       f"{m['set_coverage']:.3f} (stated {coverage:g}), mean size "
                       f"{m['mean_set_size']:.2f}")
    firsts = [f"{k.removeprefix('macro_f1_first_')} {v:.3f}" for k, v in m.items()
              if k.startswith("macro_f1_first_")]
    if firsts:
        typer.echo("macro F1 from the first seconds of each capture: " + ", ".join(firsts))
    lates = [f"{v:.3f}" for k, v in m.items() if k.startswith("macro_f1_after_")]
    if lates:
        typer.echo(f"macro F1 on each capture's part after its first minute: {lates[0]}")
    if out.open_set:
        o = out.open_set
        typer.echo(f"open set: {o['unknown_rate']:.1%} of left-out types unknown, "
                   f"{o['known_rejected_rate']:.1%} of known rejected, "
                   f"AUROC {o['unknown_auroc']:.3f}")
    typer.echo(f"run {out.run_id}")
    typer.echo(out.uri)


@app.command("baseline")
def train_baseline_cmd(
    sources: SourcesArg = None,
    learning_period: Annotated[float | None, typer.Option(
        parser=duration_parser(1.0), metavar="DURATION",
        help="Learn from this first part of the input only, e.g. 2d, 6h (default: all).")] = None,
    window: WindowOpt = 300.0,
    classifier: Annotated[str | None, typer.Option(
        help="Bundle the classifier of this model URI.")] = None,
    register: Annotated[str | None, typer.Option(help="Register under this name.")] = None,
    promote: Annotated[bool, typer.Option(help="Set the 'champion' alias.")] = False,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "flockwatch-baseline",
    epochs: Annotated[int, typer.Option(parser=int_parser(1, 100_000), metavar="N",
                                        help="Autoencoder training epochs.")] = 80,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")] = 0,
    tracking_uri: TrackingOpt = None,
    cluster: ClusterOpt = None,
    per_site: Annotated[bool, typer.Option(
        "--per-site", help="One baseline model per SOURCE (a site's folder or capture), "
        "registered as REGISTER-<name>; with --cluster, sites are fitted side by side on the "
        "workers.")] = False,
) -> None:
    """Learn each device's normal behaviour from captures; log and register the model.

    Example: flockwatch train baseline week1/ --learning-period 5d --register flockwatch --promote
    """
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import ModelLoadError, check_tracking_server
    from flockwatch.training.baseline import train_baseline

    if per_site:
        _baselines_per_site(require_sources(sources), window=window,
                            learning_period=learning_period, classifier=classifier,
                            register=register, promote=promote, experiment=experiment,
                            epochs=epochs, seed=seed, tracking_uri=tracking_uri, cluster=cluster)
        return
    try:
        check_tracking_server(tracking_uri)  # a server that is down fails before the training
        with cluster_session(cluster) as client, counting_files("reading") as prog:
            task = prog.add_task("", total=None)
            out = train_baseline(require_sources(sources),
                                 window_s=parse_duration(window) or 300.0,
                                 learning_period_s=parse_duration(learning_period),
                                 classifier_uri=classifier, register_name=register,
                                 promote=promote, experiment=experiment,
                                 tracking_uri=tracking_uri, seed=seed, epochs=epochs,
                                 on_file=lambda _: prog.advance(task), client=client)
    except (ModelLoadError, ValueError) as exc:
        fail(str(exc))
    for p in out.problems:
        typer.echo(f"  input: {one_line(p)}", err=True)
    typer.echo(f"{out.devices} devices, {out.windows} learning windows; run {out.run_id}")
    typer.echo(out.uri)


def _baselines_per_site(sources: list[Path], *, window: float, learning_period: float | None,
                        classifier: str | None, register: str | None, promote: bool,
                        experiment: str, epochs: int, seed: int, tracking_uri: str | None,
                        cluster: str | None) -> None:
    """``train baseline --per-site``: each source a site, each site its own model."""
    import re

    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import ModelLoadError
    from flockwatch.training.baseline import train_baselines

    sites: dict[str, list[str]] = {}
    for src in sources:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.stem if src.is_file() else src.name) or "site"
        if name in sites:
            fail(f"{src}: two sites named {name!r}; give sources of distinct names")
        sites[name] = [str(src)]
    try:
        with cluster_session(cluster) as client:
            out = train_baselines(sites, client=client, register_name=register,
                                  window_s=parse_duration(window) or 300.0,
                                  learning_period_s=parse_duration(learning_period),
                                  classifier_uri=classifier, promote=promote,
                                  experiment=experiment, tracking_uri=tracking_uri, seed=seed,
                                  epochs=epochs)
    except (ModelLoadError, ValueError) as exc:
        fail(str(exc))
    for name, o in out.items():
        for p in o.problems:
            typer.echo(f"  {name}: input: {one_line(p)}", err=True)
        typer.echo(f"{name}: {o.devices} devices, {o.windows} learning windows; run "
                   f"{o.run_id}; {o.uri}")
