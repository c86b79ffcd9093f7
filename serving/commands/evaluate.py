"""``flockwatch evaluate``: score a labelled capture set with a model (imports training
inside the command only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.cluster import ClusterOpt, cluster_session
from flockwatch.serving.commands.common import (
    TrackingOpt,
    check_output,
    check_reject_quantile,
    fail,
    warn,
)


def evaluate(
    dataset_dir: Annotated[Path, typer.Argument(help="Labelled capture set.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model URI or folder.")],
    label_column: Annotated[str, typer.Option(
        help="labels.csv column holding the true type.")] = "device_type",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON here.")]
    = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write the confusion matrix as a PNG.")] = None,
    reject_quantile: Annotated[float | None, typer.Option(
        help="Re-decide the model's open-set rejection at this trade-off for this evaluation "
             "(see train classifier --reject-quantile; default: the model's own).")] = None,
    coverage: Annotated[float | None, typer.Option(
        min=0.5, max=0.999, help="Re-calibrate the prediction sets to this coverage for this "
        "evaluation (default: the model's own).")] = None,
    tracking_uri: TrackingOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    """Score every labelled capture with a model: metrics and per-capture predictions (JSON).

    The metrics cover the captures the model was not trained on (compared by content with
    the ones it records); those it was trained on are reported apart, with a warning, and a
    set of nothing else is refused: hold captures out with `flockwatch datasets split`.

    Example: flockwatch evaluate split/test --model models:/held/1 -o eval.json
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.output import to_json, write_atomic
    from flockwatch.models.store import ModelLoadError, configure
    from flockwatch.training.evaluate import evaluate_dataset

    check_reject_quantile(reject_quantile)
    check_output(output, "--output")
    check_output(plot, "--plot")
    configure(tracking_uri)
    try:
        with cluster_session(cluster) as client:
            out = evaluate_dataset(dataset_dir, model, label_column=label_column,
                                   reject_quantile=reject_quantile, coverage=coverage,
                                   client=client)
    except (DatasetError, ModelLoadError, ValueError) as exc:
        fail(exc)
    for w in out["warnings"]:
        warn(w)
    text = to_json(out, indent=2)
    if plot:
        from flockwatch.serving.plots import write_png
        from flockwatch.training.metrics import confusion_figure

        write_png(confusion_figure(out["metrics"], f"{dataset_dir.name} scored by {model}"
                                   + (" (held-out captures)" if out["seen_in_training"] else "")),
                  plot)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
        m = out["metrics"]
        line = (f"macro F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f} on "
                f"{m['n']} held-out captures")
        if "set_coverage" in m:
            line += (f"; category {m['category_accuracy']:.3f}, vendor "
                     f"{m['vendor_accuracy']:.3f}, sets cover {m['set_coverage']:.3f} "
                     f"(stated {m['coverage_stated']:g}) at mean size {m['mean_set_size']:.2f}")
        seen = out["seen_in_training"]
        if seen:
            s = seen["metrics"]
            line += (f" (the {seen['captures']} training captures apart: macro F1 "
                     f"{s['macro_f1']:.3f})")
        typer.echo(f"{line} -> {output}")
    else:
        typer.echo(text)
