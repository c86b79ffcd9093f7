"""Training behavioural baselines: ``flockwatch train baseline``."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from flockwatch.features.attribution import attribute
from flockwatch.features.explain import vocabulary
from flockwatch.features.findings import learn_masters
from flockwatch.features.flows import extract
from flockwatch.features.hashing import file_hash
from flockwatch.features.output import iso_utc
from flockwatch.features.windows import WindowSpec, windows
from flockwatch.models.baseline import BaselineAutoencoder
from flockwatch.models.bundle import Bundle, bundle_of
from flockwatch.models.peers import PeerBaseline
from flockwatch.training.result import TrainResult
from flockwatch.training.tracking import log_figure, register, start_run


def learning_prefix(flows: pl.DataFrame, period_s: float | None) -> pl.DataFrame:
    """Flows of the learning period: the first ``period_s`` seconds of the whole input."""
    if period_s is None or flows.height == 0:
        return flows
    t0 = flows["first_seen"].min()
    return flows.filter(pl.col("first_seen") < pl.lit(t0) + pl.duration(seconds=period_s))


def learning_record(flows: pl.DataFrame, period_s: float | None) -> dict[str, Any]:
    """What a baseline learns from (``Bundle.learning``): the interval, and the captures whose
    flows fall in it, by content hash (so ``score`` knows them under any name or path). The
    interval runs from the first flow to ``period_s`` later, or to the last flow's end when
    the whole input is learnt."""
    if flows.height == 0:
        return {}
    t0: dt.datetime = flows["first_seen"].min()  # type: ignore[assignment]
    learnt = learning_prefix(flows, period_s)
    if period_s is None:
        # just past the last flow: every window that starts with a learnt flow falls inside
        last: dt.datetime = learnt.select(
            pl.max_horizontal(pl.col("first_seen").max(), pl.col("last_seen").max())).item()
        end = last + dt.timedelta(milliseconds=1)
    else:
        end = t0 + dt.timedelta(seconds=period_s)
    captures = []
    for src in sorted(learnt["source"].unique().to_list()):
        path = Path(src)
        if path.is_file():  # a capture or a Zeek log; not a live interface
            captures.append({"sha256": file_hash(path), "name": path.name,
                             "bytes": path.stat().st_size})
    return {"start": iso_utc(t0), "end": iso_utc(end), "period_s": period_s,
            "captures": captures}


def classifier_from(uri: str | None) -> tuple[Any, WindowSpec | None, dict[str, Any]]:
    """The classifier of the model at ``uri``, its window spec and its bundle's ``info``
    (whose record of training captures the new bundle keeps, for ``evaluate``)."""
    if not uri:
        return None, None, {}
    from flockwatch.models.store import load_model

    bundle = bundle_of(load_model(uri))
    if bundle.classifier is None:
        raise ValueError(f"{uri}: this flockwatch model has no classifier")
    return bundle.classifier, bundle.classifier_window or bundle.window, bundle.info


def fit_baseline(flows: pl.DataFrame, *, window_s: float = 300.0, learning_period_s: float | None
                 = None, seed: int = 0, epochs: int = 80) -> tuple[BaselineAutoencoder,
                                                                   pl.DataFrame]:
    spec = WindowSpec(window_s)
    learn = learning_prefix(flows, learning_period_s)
    win = windows(learn, spec)
    if win.height < 2:
        raise ValueError(f"the learning period holds {win.height} device window(s); give "
                         "longer captures, a longer --learning-period or a shorter --window")
    model = BaselineAutoencoder(seed=seed, epochs=epochs).fit(win)
    return model, win


@dataclass
class SiteFit:
    """A site's fitted baseline and what its run logs: a pure step's result, computed
    in-process or on a cluster worker (``train_baselines``)."""

    model: BaselineAutoencoder
    windows: pl.DataFrame
    peers: PeerBaseline
    learning: dict[str, Any]
    problems: list[Any] = field(default_factory=list)
    errors: int = 0
    #: per device, the words and fingerprints shown while learning (``Bundle.vocabulary``)
    vocabulary: dict[str, frozenset[str]] = field(default_factory=dict)
    #: per device, the hosts that sent it industrial requests while learning
    #: (``Bundle.masters``)
    masters: dict[str, frozenset[str]] = field(default_factory=dict)


def fit_site(sources: Sequence[str | os.PathLike[str]], *, window_s: float = 300.0,
             learning_period_s: float | None = None, seed: int = 0, epochs: int = 80,
             flows: pl.DataFrame | None = None,
             on_file: Callable[[str], None] | None = None) -> SiteFit:
    """Read a site's captures (unless ``flows`` are given) and fit its baselines."""
    result = None
    if flows is None:
        from flockwatch.features.cluster import allow_children

        allow_children()  # on a cluster worker: NFStream meters in child processes
        result = extract(sources, on_file=on_file)
        flows = result.flows
    if flows.height == 0:
        raise ValueError("no flows in the given sources: " + "; ".join(
            map(str, result.problems if result else [])))
    model, win = fit_baseline(flows, window_s=window_s, learning_period_s=learning_period_s,
                              seed=seed, epochs=epochs)
    learnt = attribute(learning_prefix(flows, learning_period_s))
    return SiteFit(model, win, PeerBaseline().fit(learnt),
                   learning_record(flows, learning_period_s),
                   list(result.problems) if result else [], len(result.errors) if result else 0,
                   vocabulary(learnt), learn_masters(learnt))


def train_baseline(
    sources: Sequence[str | os.PathLike[str]], *, window_s: float = 300.0,
    learning_period_s: float | None = None, classifier_uri: str | None = None,
    register_name: str | None = None, promote: bool = False,
    experiment: str = "flockwatch-baseline", tracking_uri: str | None = None, seed: int = 0,
    epochs: int = 80, on_file: Callable[[str], None] | None = None, client: Any = None,
) -> TrainResult:
    """Learn baselines from captures, log the run to MLflow, register the pyfunc model.
    ``client``: read the captures on that Dask cluster (``features.cluster``)."""
    if client is not None:
        from flockwatch.features.cluster import extract_on

        result = extract_on(client, sources, on_file=on_file)
    else:
        result = extract(sources, on_file=on_file)
    if result.flows.height == 0:
        raise ValueError("no flows in the given sources: " + "; ".join(map(str, result.problems)))
    classifier = classifier_from(classifier_uri)
    fit = fit_site(sources, window_s=window_s, learning_period_s=learning_period_s, seed=seed,
                   epochs=epochs, flows=result.flows)
    fit.problems, fit.errors = list(result.problems), len(result.errors)
    return _log_site(fit, sources, classifier, window_s=window_s,
                     learning_period_s=learning_period_s, classifier_uri=classifier_uri,
                     register_name=register_name, promote=promote, experiment=experiment,
                     tracking_uri=tracking_uri, seed=seed)


def train_baselines(
    sites: dict[str, list[str]], *, client: Any = None, register_name: str | None = None,
    window_s: float = 300.0, learning_period_s: float | None = None,
    classifier_uri: str | None = None, promote: bool = False,
    experiment: str = "flockwatch-baseline", tracking_uri: str | None = None, seed: int = 0,
    epochs: int = 80, on_site: Callable[[str], None] | None = None,
) -> dict[str, TrainResult]:
    """One baseline model per site (``{name: sources}``), each its own run and registered
    model ``<register_name>-<name>``. With a Dask ``client`` the sites are fitted side by
    side on its workers (``client.map`` of ``fit_site``: reading and fitting both), then
    logged and registered here, in ``sites`` order."""
    classifier = classifier_from(classifier_uri)
    kwargs = {"window_s": window_s, "learning_period_s": learning_period_s, "seed": seed,
              "epochs": epochs}
    names = list(sites)
    if client is not None:
        from distributed import as_completed

        from flockwatch.features.cluster import RETRIES

        futures = client.map(fit_site, [sites[n] for n in names], retries=RETRIES, pure=False,
                             **kwargs)
        for fut in as_completed(futures):  # type: ignore[no-untyped-call]
            if on_site:
                on_site(names[futures.index(fut)])
        fits = client.gather(futures)
    else:
        fits = []
        for n in names:
            fits.append(fit_site(sites[n], **kwargs))  # type: ignore[arg-type]
            if on_site:
                on_site(n)
    return {n: _log_site(fit, sites[n], classifier, window_s=window_s,
                         learning_period_s=learning_period_s, classifier_uri=classifier_uri,
                         register_name=f"{register_name}-{n}" if register_name else None,
                         promote=promote, experiment=experiment, tracking_uri=tracking_uri,
                         seed=seed)
            for n, fit in zip(names, fits, strict=True)}


def _log_site(fit: SiteFit, sources: Sequence[str | os.PathLike[str]],
              classifier: tuple[Any, WindowSpec | None, dict[str, Any]], *, window_s: float,
              learning_period_s: float | None, classifier_uri: str | None,
              register_name: str | None, promote: bool, experiment: str,
              tracking_uri: str | None, seed: int) -> TrainResult:
    """Log a fitted site's run to MLflow and register its pyfunc model."""
    import mlflow

    model, win, learning = fit.model, fit.windows, fit.learning
    clf, cwin, classifier_info = classifier
    with start_run(experiment, tracking_uri, "baseline"):
        mlflow.log_params({
            "window_s": window_s, "learning_period_s": learning_period_s or "all",
            "hidden": list(model.hidden), "epochs": model.epochs, "seed": seed,
            "threshold": model.threshold_rule_.describe(),
            "classifier_uri": classifier_uri or "",
            "sources": ", ".join(map(str, sources))[:500],
        })
        mlflow.log_metrics({"devices": len(model.devices_), "learning_windows": win.height,
                            "final_loss": model.loss_curve_[-1],
                            "bad_inputs": fit.errors})
        for i, loss in enumerate(model.loss_curve_):
            mlflow.log_metric("train_loss", loss, step=i)
        mlflow.log_dict({d: float(t)
                         for d, t in (model.threshold_rule_.thresholds_ or {}).items()},
                        "thresholds.json")
        log_figure(_score_figure(model, win), "learning_scores.png")
        mlflow.log_metric("known_local_peers", fit.peers.known_.height)  # type: ignore[union-attr]
        bundle = Bundle(window=WindowSpec(window_s), classifier=clf,
                        classifier_window=cwin, baseline=model, peers=fit.peers,
                        vocabulary=fit.vocabulary, masters=fit.masters,
                        info={"kind": "baseline", "devices": len(model.devices_),
                              "learning": learning})
        if classifier_info.get("training_captures") is not None:
            bundle.info["training_captures"] = classifier_info["training_captures"]
        reg = register(bundle, register_name, promote)
    return TrainResult("baseline", **asdict(reg), devices=len(model.devices_),
                       windows=win.height, learning=learning,
                       problems=tuple(str(p) for p in fit.problems))


def _score_figure(model: BaselineAutoencoder, win: pl.DataFrame) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(model.loss_curve_)
    a.set(title="training loss", xlabel="epoch", ylabel="MSE", yscale="log")
    s = np.asarray(model.learning_scores_)
    b.hist(np.log10(s + 1e-6), bins=50, color="tab:blue", alpha=0.8)
    b.axvline(np.log10(model.threshold_rule_.pooled_), color="tab:red", ls="--",
              label="pooled threshold")
    b.set(title="learning-period anomaly scores", xlabel="log10 score", ylabel="windows")
    b.legend()
    fig.tight_layout()
    return fig
