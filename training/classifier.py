"""Training the device-type classifier: ``flockwatch train classifier``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from flockwatch.datasets.labelled import (
    DatasetError,
    LabelledDataset,
    capture_evidence,
    dataset_flows,
    early_windows,
    labelled_evidence,
    labelled_windows,
    late_windows,
    load_dataset,
)
from flockwatch.features.windows import WindowSpec
from flockwatch.models.base import group_folds, parallel_map
from flockwatch.models.bundle import Bundle
from flockwatch.models.classifier import UNKNOWN, DeviceClassifier, Trainer
from flockwatch.models.identity import DeviceIdentifier
from flockwatch.training.metrics import (
    classification_metrics,
    confusion_figure,
    identity_metrics,
)
from flockwatch.training.result import TrainResult
from flockwatch.training.tracking import log_figure, register, start_run


def check_groups(ds: LabelledDataset) -> None:
    single = [lab for lab, n in ds.group_counts().items() if n < 2]
    if single:
        raise DatasetError(
            f"{ds.root / 'labels.csv'}: label(s) {', '.join(single)} have a single capture; "
            "at least two per label are needed for capture-separated validation")


@dataclass
class Identity:
    """What identification learns from beside the windows (``DeviceIdentifier``): each
    labelled device's evidence samples (``labelled_evidence``), its type's category and
    vendor, and, per window set (``all``, ``first_30s``, ...), the evidence of every device
    over the same part of each capture (``capture_evidence``), so that a set of first
    seconds is never judged with evidence from later on."""

    samples: dict[tuple[str, str], list[list[str]]]
    categories: dict[str, str | None]
    vendors: dict[str, str | None]
    sets: dict[str, pl.DataFrame]

    def train_samples(self, groups: Collection[str]) -> dict[tuple[str, str], list[list[str]]]:
        return {k: v for k, v in self.samples.items() if k[0] in groups}


def identity_data(ds: LabelledDataset, flows: dict[Any, pl.DataFrame],
                  early_seconds: Sequence[float] = (), after_seconds: Sequence[float] = ()
                  ) -> Identity:
    sets = {"all": capture_evidence(flows)}
    for s in early_seconds:
        sets[f"first_{s:g}s"] = capture_evidence(flows, None, s)
    for s in after_seconds:
        sets[f"after_{s:g}s"] = capture_evidence(flows, s, None)
    # the training views are slices the sets have already computed: not extracted twice
    done = {"whole": sets["all"], **{k: v for k, v in sets.items() if k != "all"}}
    return Identity(labelled_evidence(ds, flows, tables=done),
                    {c.label: c.category for c in ds.captures},
                    {c.label: c.vendor for c in ds.captures}, sets)


def make_model(params: dict[str, Any], seed: int, n_jobs: int | None, train: pl.DataFrame,
               identity: Identity | None,
               on_step: Callable[[str, int, int], None] | None = None,
               trainer: Trainer | None = None) -> Any:
    """The model fitted on ``train``: the three-level identifier where there is evidence
    data, else the behaviour classifier alone. ``trainer``: its final LightGBM fits
    (``training.distributed``)."""
    if identity is None:
        return DeviceClassifier(seed=seed, n_jobs=n_jobs, **params).fit(
            train, train["label"], train["group"], on_step=on_step, trainer=trainer)
    p = dict(params)
    ident = {k: p.pop(k) for k in ("reject_quantile", "coverage", "site_shift") if k in p}
    return DeviceIdentifier(seed=seed, n_jobs=n_jobs, behaviour_params=p or None, **ident).fit(
        train, train["label"], train["group"],
        identity.train_samples(set(train["group"].unique().to_list())),
        categories=identity.categories, vendors=identity.vendors, on_step=on_step,
        trainer=trainer)


def device_predictions(clf: Any, win: pl.DataFrame, evidence: pl.DataFrame | None = None
                       ) -> pl.DataFrame:
    """One prediction per labelled capture (its windows' probabilities aggregated)."""
    if isinstance(clf, DeviceIdentifier):
        pred = clf.predict_devices(win, by=("capture", "device_id"), evidence=evidence)
    else:
        pred = clf.predict_devices(win, by=("capture", "device_id"))
    truth = win.group_by("capture", "device_id").agg(pl.col("label").first(),
                                                     pl.col("group").first())
    return truth.join(pred, on=["capture", "device_id"], how="inner").sort("capture")


def _with_extra(train: pl.DataFrame, extra: dict[str, pl.DataFrame] | None) -> pl.DataFrame:
    """Training windows plus the extra rows (``early_windows``) of the same groups only."""
    if not extra:
        return train
    groups = train["group"].unique().implode()
    mine = [e.filter(pl.col("group").is_in(groups)).select(train.columns)
            for e in extra.values()]
    return pl.concat([train, *mine], how="vertical_relaxed")


def _swept(clf: Any, windows: pl.DataFrame, reject_quantiles: Sequence[float],
           evidence: pl.DataFrame | None = None) -> list[pl.DataFrame]:
    """Device predictions of ``clf`` under each open-set ``reject_quantile``, tagged with the
    quantile: predicted once, then only the rejection re-decided."""
    if not reject_quantiles:
        return []
    base = device_predictions(clf, windows, evidence)
    conf, nov = base["type_confidence"].to_numpy(), base["type_novelty"].to_numpy()
    own = clf.reject_quantile
    out = []
    try:
        for q in reject_quantiles:
            clf.set_reject_quantile(q)
            if isinstance(clf, DeviceIdentifier):
                unknown = pl.Series("unknown", clf.rejects(base["evidence_similarity"],
                                                           base["evidence_novelty"]))
            else:
                unknown = pl.Series("unknown", clf.rejects(conf, nov))
            out.append(base.with_columns(
                unknown,
                pl.when(unknown).then(pl.lit(UNKNOWN)).otherwise(pl.col("closest_type"))
                .alias("device_type"),
                pl.lit(float(q)).alias("reject_quantile")))
    finally:
        clf.set_reject_quantile(own)
    return out


def _inner_jobs(n_jobs: int | None, tasks: int) -> int | None:
    """Threads each model may use inside when ``tasks`` models train side by side: one when
    they run in parallel (the cores are taken), else ``n_jobs``."""
    import os

    outer = max(1, min(tasks, n_jobs or os.cpu_count() or 1))
    return 1 if outer > 1 else n_jobs


def cross_validate(win: pl.DataFrame, *, n_folds: int = 4, seed: int = 0,
                   params: dict[str, Any] | None = None,
                   extra_train: dict[str, pl.DataFrame] | None = None,
                   evaluate_on: dict[str, pl.DataFrame] | None = None,
                   reject_quantiles: Sequence[float] = (),
                   merge: dict[str, str] | None = None,
                   on_fold: Callable[[int, int], None] | None = None,
                   n_jobs: int | None = None, identity: Identity | None = None,
                   ) -> tuple[dict[str, Any], pl.DataFrame]:
    """Capture-grouped cross-validation: metrics and predictions over all held-out captures.

    ``extra_train`` rows (e.g. ``early_windows``) join the training folds of their group and
    are never evaluated. ``evaluate_on`` names further window sets (e.g. the first 30 s of
    each capture) scored by the same fold models; their metrics come back under
    ``metrics["sets"][name]``. ``reject_quantiles``: the same fold models re-decided under
    each open-set trade-off, in ``metrics["sweep"]`` (macro F1, accuracy, share of captures
    rejected, and with ``merge``, a label -> group map such as same-vendor families, the
    macro F1 with the groups merged). The main metrics carry ``known_rejected`` and, with
    ``merge``, ``macro_f1_merged`` too. ``on_fold(done, folds)`` hears of each fold's end.
    ``n_jobs``: fold models trained side by side (None: every core); no effect on results.
    ``identity``: fit the three-level ``DeviceIdentifier`` (evidence, category, vendor,
    prediction sets) instead of the behaviour classifier alone; the metrics then carry
    ``identity_metrics`` too, per set.
    """
    folds = group_folds(win["label"].to_list(), win["group"].to_list(), n_folds, seed)
    sets = {"all": win, **(evaluate_on or {})}
    inner = _inner_jobs(n_jobs, n_folds)

    def fold(k: int) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
        test = folds == k
        if not test.any() or test.all():
            return [], []
        tr = _with_extra(win.filter(pl.Series(~test)), extra_train)
        test_groups = win.filter(pl.Series(test))["group"].unique().implode()
        clf = make_model(params or {}, seed, inner, tr, identity)
        out = []
        for name, ev in sets.items():
            te = ev.filter(pl.col("group").is_in(test_groups))
            if te.height:
                out.append(device_predictions(clf, te, _set_evidence(identity, name))
                           .with_columns(pl.lit(k).alias("fold"), pl.lit(name).alias("set")))
        return out, _swept(clf, win.filter(pl.Series(test)), reject_quantiles,
                           _set_evidence(identity, "all"))

    # The fold models are independent: they train side by side, results in fold order.
    preds, swept = [], []
    for k, (p_k, s_k) in enumerate(parallel_map(fold, range(n_folds), n_jobs)):
        preds += p_k
        swept += s_k
        if on_fold:
            on_fold(k + 1, n_folds)
    p = pl.concat(preds)
    main = p.filter(pl.col("set") == "all")
    metrics = classification_metrics(main["label"].to_list(), main["device_type"].to_list())
    metrics.update(_rejection_summary(main, merge))
    if identity is not None:
        metrics.update(_identity_summary(main, identity))
    if evaluate_on:
        metrics["sets"] = {}
        for name in evaluate_on:
            q = p.filter(pl.col("set") == name)
            metrics["sets"][name] = classification_metrics(q["label"].to_list(),
                                                           q["device_type"].to_list())
            if identity is not None:
                metrics["sets"][name].update(_identity_summary(q, identity))
    if swept:
        metrics["sweep"] = [
            {"reject_quantile": rq, **_rejection_summary(g, merge, with_f1=True)}
            for (rq,), g in pl.concat(swept).group_by("reject_quantile", maintain_order=True)]
    return metrics, main.drop("set")


def _set_evidence(identity: Identity | None, name: str) -> pl.DataFrame | None:
    return None if identity is None else identity.sets.get(name)


def _identity_summary(p: pl.DataFrame, identity: Identity) -> dict[str, float]:
    return identity_metrics(p["label"].to_list(), p["device_type"].to_list(),
                            p["candidates"].to_list(), p["category"].to_list(),
                            p["vendor"].to_list(), identity.categories, identity.vendors)


def _rejection_summary(p: pl.DataFrame, merge: dict[str, str] | None, *,
                       with_f1: bool = False) -> dict[str, float]:
    """Share of captures rejected as unknown, the macro F1 with ``merge``'s label groups
    merged (when given) and, ``with_f1``, the plain macro F1 and accuracy."""
    out = {"known_rejected": float(np.mean(p["unknown"].to_numpy()))}
    if with_f1:
        m = classification_metrics(p["label"].to_list(), p["device_type"].to_list())
        out.update(macro_f1=m["macro_f1"], accuracy=m["accuracy"])
    if merge:
        out["macro_f1_merged"] = classification_metrics(
            p["label"].replace(merge).to_list(),
            p["device_type"].replace(merge).to_list())["macro_f1"]
    return out


def open_set(win: pl.DataFrame, *, classes: list[str] | None = None, n_folds: int = 4,
             seed: int = 0, params: dict[str, Any] | None = None,
             extra_train: dict[str, pl.DataFrame] | None = None,
             reject_quantiles: Sequence[float] = (),
             on_class: Callable[[int, int], None] | None = None,
             n_jobs: int | None = None, identity: Identity | None = None) -> dict[str, Any]:
    """Leave each class out of training in turn: how often its captures come back unknown,
    and how often held-out captures of known classes are wrongly rejected (``sweep``: the
    same under each of ``reject_quantiles``, from the same models). ``on_class(done,
    classes)`` hears of each left-out class's end. ``n_jobs``: models trained side by side
    (None: every core); no effect on results."""
    from sklearn.metrics import roc_auc_score

    all_classes = sorted(set(win["label"].to_list()))
    classes = classes or all_classes
    folds = group_folds(win["label"].to_list(), win["group"].to_list(), n_folds, seed)
    per_class: dict[str, float] = {}
    predicted_as: dict[str, dict[str, int]] = {}
    levels: dict[str, dict[str, Any]] = {}
    rejected_known, n_known = 0, 0
    conf_unknown: list[float] = []
    conf_known: list[float] = []
    swept: dict[float, dict[str, list[float]]] = {
        float(q): {"unknown": [], "known": []} for q in reject_quantiles}
    test = folds == 0
    inner = _inner_jobs(n_jobs, len(classes))

    def left_out(i: int) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame],
                                  list[pl.DataFrame]] | None:
        is_c = (win["label"] == classes[i]).to_numpy()
        tr = _with_extra(win.filter(pl.Series(~is_c & ~test)), extra_train)
        te_known = win.filter(pl.Series(~is_c & test))
        te_unknown = win.filter(pl.Series(is_c))
        if len(set(tr["label"].to_list())) < 2:
            return None
        clf = make_model(params or {}, seed, inner, tr, identity)
        ev = _set_evidence(identity, "all")
        return (device_predictions(clf, te_unknown, ev), device_predictions(clf, te_known, ev),
                _swept(clf, te_unknown, reject_quantiles, ev),
                _swept(clf, te_known, reject_quantiles, ev))

    # One model per left-out class, side by side; gathered in class order.
    for i, res in enumerate(parallel_map(left_out, range(len(classes)), n_jobs)):
        if on_class and i:
            on_class(i, len(classes))
        if res is None:
            continue
        c = classes[i]
        pu, pk, swept_u, swept_k = res
        per_class[c] = float(np.mean(pu["unknown"].to_numpy())) if pu.height else 0.0
        predicted_as[c] = dict(Counter(pu["device_type"].to_list()))
        if identity is not None and pu.height:
            # what a never-seen product still gets right: its category and maker
            levels[c] = {
                "category": dict(Counter(pu["category"].to_list())),
                "category_right": float(np.mean([x == identity.categories.get(c)
                                                 for x in pu["category"].to_list()])),
                "vendor": dict(Counter(pu["vendor"].to_list())),
                "vendor_right": float(np.mean([x == identity.vendors.get(c)
                                               for x in pu["vendor"].to_list()]))}
        rejected_known += int(pk["unknown"].sum())
        n_known += pk.height
        conf_unknown += pu["type_confidence"].to_list()
        conf_known += pk["type_confidence"].to_list()
        for q, su, sk in zip(reject_quantiles, swept_u, swept_k, strict=True):
            if su.height:
                swept[float(q)]["unknown"].append(float(np.mean(su["unknown"].to_numpy())))
            swept[float(q)]["known"] += sk["unknown"].cast(pl.Float64).to_list()
    if on_class:
        on_class(len(classes), len(classes))
    y = [1] * len(conf_unknown) + [0] * len(conf_known)
    s = [-x for x in conf_unknown + conf_known]
    auroc = float(roc_auc_score(y, s)) if len(set(y)) == 2 else float("nan")
    return {
        "unknown_rate_per_left_out_class": per_class,  # share of its captures called unknown
        "unknown_rate": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "known_rejected_rate": rejected_known / n_known if n_known else float("nan"),
        "unknown_auroc": auroc,
        # what each left-out class's captures were called ("unknown" or a known type)
        "predicted_as": predicted_as,
        # with identity: category and vendor given to each left-out class, and how often right
        "levels": levels,
        "category_right_rate": (float(np.mean([v["category_right"] for v in levels.values()]))
                                if levels else float("nan")),
        "sweep": [{"reject_quantile": q,
                   "unknown_rate": float(np.mean(v["unknown"])) if v["unknown"] else float("nan"),
                   "known_rejected_rate": float(np.mean(v["known"])) if v["known"]
                   else float("nan")} for q, v in swept.items()],
    }


#: Progress reports from training, so that the CLI can draw them and training never prints:
#: ``(phase, steps done, steps in the phase)``; the phases, in order, are ``PHASES``.
ProgressFn = Callable[[str, int, int], None]
PHASES = ("extracting flows", "windows", "product evidence", "cross-validation",
          "open-set estimation", "cross-fitting", "calibration", "final fit", "category model",
          "evidence profiles", "prediction sets", "logging to MLflow")


#: Steady-state rows: each training capture's part after this many seconds also trains the
#: model (``late_windows``), and the cross-validation reports it (``macro_f1_after_60s``).
LATE_AFTER_S = 60.0


def _nothing(phase: str, done: int, total: int) -> None:
    return None


def train_classifier(
    dataset_dir: str | os.PathLike[str], *, label_column: str = "device_type",
    group_column: str | None = None, window_s: float = 300.0, n_folds: int = 4,
    open_set_classes: int = 6, register_name: str | None = None, promote: bool = False,
    experiment: str = "flockwatch-classifier", tracking_uri: str | None = None, seed: int = 0,
    on_file: Callable[[str], None] | None = None, early_seconds: Sequence[float] = (10, 30, 60),
    reject_quantile: float = 0.04, quick: bool = False, progress: ProgressFn | None = None,
    n_jobs: int | None = None, coverage: float = 0.95, site_shift: float = 0.8,
    client: Any = None, dask_min_windows: int | None = None,
) -> TrainResult:
    """Train on a labelled capture set; log params, metrics, figures and lineage; register.

    ``early_seconds``: the first seconds of each capture also train the model (as windows of
    their own), so it names a device from its first seconds of traffic, not only from whole
    windows; the cross-validation reports each of these lengths on held-out captures. So do
    the parts after the first ``LATE_AFTER_S`` seconds (steady state).
    ``reject_quantile``, ``coverage``, ``site_shift``: the open-set trade-off, the prediction
    sets' coverage and the share of behaviour not trusted (see ``DeviceIdentifier``).
    ``quick``: skip what only the report needs (the capture-separated cross-validation and
    the open-set runs, ten of the eleven models a full run fits); the model is the same, its
    rejection thresholds come from its own cross-fitting either way.
    ``progress``: called as each step of each phase (``PHASES``) ends.
    ``n_jobs``: models trained side by side (None: every core); the results do not depend
    on it.

    ``client``: a Dask client (``features.cluster``): captures are read and windows
    computed on its workers, and from ``dask_min_windows`` training windows on (default
    ``training.distributed.DASK_MIN_WINDOWS``) the final fits go through LightGBM's Dask
    interface; the registered model is the same pyfunc either way.

    The model records the content hash (sha256) and path of every training capture in its
    bundle's ``info["training_captures"]``, so that ``evaluate`` can tell held-out captures
    from those it has seen.
    """
    import mlflow

    from flockwatch.datasets.labelled import file_hash

    step = progress or _nothing
    ds = load_dataset(dataset_dir, label_column, group_column)
    check_groups(ds)
    paths = list(dict.fromkeys(c.path for c in ds.captures))
    done = 0

    def extracted(name: str) -> None:
        nonlocal done
        done += 1
        step(PHASES[0], done, len(paths))
        if on_file:
            on_file(name)

    step(PHASES[0], 0, len(paths))
    flows, problems = dataset_flows(ds, on_file=extracted, client=client)
    bad = [p for p in problems if p.severity == "error"]
    if bad:
        raise DatasetError(f"{bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""))
    spec = WindowSpec(window_s)
    step(PHASES[1], 0, 1 + len(early_seconds))
    wfn = None
    if client is not None:
        from flockwatch.features.cluster import windows_on

        def wfn(f: pl.DataFrame, sp: WindowSpec) -> pl.DataFrame:
            return windows_on(client, f, sp)  # type: ignore[no-any-return]
    win = labelled_windows(ds, flows, spec, windows_fn=wfn)
    step(PHASES[1], 1, 1 + len(early_seconds))
    early = {}
    for i, s in enumerate(early_seconds):
        early.update(early_windows(ds, flows, spec, [s], windows_fn=wfn))
        step(PHASES[1], 2 + i, 1 + len(early_seconds))
    # the steady state: each capture's part after its first minute
    early.update(late_windows(ds, flows, spec, LATE_AFTER_S, windows_fn=wfn))
    step("product evidence", 0, 1)
    identity = identity_data(ds, flows, early_seconds, [LATE_AFTER_S])
    step("product evidence", 1, 1)
    # A whole-site capture has a row per device: "label" is the capture's one label, or
    # its labels joined by ", "; "devices" names each labelled device.
    rows_of: dict[Any, list[Any]] = {}
    for c in ds.captures:
        rows_of.setdefault(c.path, []).append(c)
    training_captures = [
        {"path": os.path.relpath(p, ds.root), "sha256": file_hash(p),
         "label": ", ".join(sorted({c.label for c in rows_of[p]})),
         "devices": [{"mac": c.mac, "label": c.label} for c in rows_of[p]]}
        for p in paths]
    min_groups = min(ds.group_counts().values())
    folds = max(2, min(n_folds, min_groups))
    params = {"reject_quantile": reject_quantile, "coverage": coverage, "site_shift": site_shift}
    labels = sorted(set(win["label"].to_list()))
    with start_run(experiment, tracking_uri, "classifier"):
        cv: dict[str, Any] = {}
        preds = None
        osr: dict[str, Any] = {}
        if not quick:
            step("cross-validation", 0, folds)
            cv, preds = cross_validate(
                win, n_folds=folds, seed=seed, extra_train=early, evaluate_on=early,
                params=params, on_fold=lambda k, n: step("cross-validation", k, n),
                n_jobs=n_jobs, identity=identity)
            rng = np.random.default_rng(seed)
            chosen = sorted(rng.choice(labels, size=min(open_set_classes, len(labels)),
                                       replace=False).tolist()) if open_set_classes else []
            if len(labels) > 2 and chosen:
                step("open-set estimation", 0, len(chosen))
                osr = open_set(win, classes=chosen, n_folds=folds, seed=seed,
                               extra_train=early, params=params,
                               on_class=lambda k, n: step("open-set estimation", k, n),
                               n_jobs=n_jobs, identity=identity)
        full = _with_extra(win, early)
        from flockwatch.training.distributed import DASK_MIN_WINDOWS, choose_trainer

        threshold = DASK_MIN_WINDOWS if dask_min_windows is None else dask_min_windows
        trainer = choose_trainer(client, full.height, threshold)
        clf = make_model(params, seed, n_jobs, full, identity, on_step=step, trainer=trainer)
        step("logging to MLflow", 0, 1)
        mlflow.log_params({
            "label_column": label_column, "window_s": window_s, "folds": folds, "seed": seed,
            "n_estimators": clf.n_estimators, "learning_rate": clf.learning_rate,
            "num_leaves": clf.num_leaves, "best_iteration": clf.best_iteration_,
            "temperature": round(clf.temperature_, 4), "reject_quantile": reject_quantile,
            "evidence_threshold": round(max(clf.threshold_, -1.0), 4),
            "coverage": clf.coverage, "site_shift": clf.site_shift,
            "set_threshold": round(clf.set_threshold_, 4),
            "evidence_sharpness": round(clf.sharpness_, 3),
            "dataset_path": str(ds.root), "dataset_hash": ds.fingerprint()[:16],
            "captures": len(ds.captures), "classes": len(labels),
            "early_seconds": ",".join(f"{s:g}" for s in early_seconds) or "none",
            "quick": quick, "training_captures": len(training_captures),
            "final_fit": "lightgbm.dask" if trainer is not None else "in-process",
        })
        metrics: dict[str, float] = {}
        if cv:
            metrics = {"accuracy": cv["accuracy"], "macro_f1": cv["macro_f1"]}
            for key in ("category_accuracy", "vendor_accuracy", "set_coverage",
                        "mean_set_size", "right_or_set_of_2"):
                if key in cv:
                    metrics[key] = cv[key]
            for name, m in cv.get("sets", {}).items():
                metrics[f"macro_f1_{name}"] = m["macro_f1"]
            for lab, m in cv["per_class"].items():
                metrics[f"f1_{_safe(lab)}"] = m["f1"]
        if osr:
            metrics.update({"unknown_auroc": osr["unknown_auroc"],
                            "open_set_unknown_rate": osr["unknown_rate"],
                            "open_set_category_right": osr["category_right_rate"],
                            "open_set_known_rejected": osr["known_rejected_rate"]})
        if metrics:
            mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
        mlflow.log_dict({"label_counts": ds.label_counts(), "dataset": str(ds.root),
                         "hash": ds.fingerprint()}, "dataset.json")
        mlflow.log_dict({"dataset": str(ds.root), "captures": training_captures},
                        "training_captures.json")
        if cv:
            mlflow.log_dict({"cross_validation": cv, "open_set": osr}, "evaluation.json")
            log_figure(confusion_figure(cv, "capture-separated cross-validation"),
                       "confusion_matrix.png")
        mlflow.log_dict(clf.feature_importance(), "feature_importance.json")
        log_figure(_importance_figure(clf), "feature_importance.png")
        bundle = Bundle(window=spec, classifier=clf, label_column=label_column,
                        info={"kind": "classifier", "classes": labels,
                              "training_captures": training_captures})
        reg = register(bundle, register_name, promote)
        step("logging to MLflow", 1, 1)
    return TrainResult("classifier", **asdict(reg), metrics=metrics, open_set=osr,
                       classes=tuple(labels), quick=quick,
                       predictions=0 if preds is None else preds.height)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in label)


def _importance_figure(clf: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imp = sorted(clf.feature_importance().items(), key=lambda kv: -kv[1])[:25]
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.barh([k for k, _ in imp][::-1], [v for _, v in imp][::-1])
    ax.set(title="LightGBM feature importance (gain)", xlabel="gain")
    fig.tight_layout()
    return fig


__all__ = ["PHASES", "UNKNOWN", "ProgressFn", "cross_validate", "open_set", "train_classifier"]
