"""``flockwatch demo`` (and ``make demo``): the whole product on a synthetic site, from nothing.

The demo trains, so it imports ``flockwatch.training``, inside its functions only: serving
never imports training at module level.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.common import MAX_SYNTH_HOURS, TrackingOpt, fail, seconds_parser


def demo(
    hours: Annotated[float, typer.Option(
        parser=seconds_parser(MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the capture with attacks.")] = 2.0,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Run everything on a synthetic site: synthesize, train, register, score, explain."""
    from flockwatch.serving.plots import write_timeline
    from flockwatch.serving.render import render_report

    try:
        out = run_demo(typer.echo, hours=hours, tracking_uri=tracking_uri)
    except ValueError as exc:  # e.g. too few --hours for every attack
        fail(f"--hours: {exc}")
    rep = out["report"]
    typer.echo("")
    typer.echo(render_report(rep))
    typer.echo("Injected attacks (ground truth) and the first alert on the attacking device:")
    for line in attack_summary(rep, out["attacks_csv"], 120.0):
        typer.echo(line)
    timeline = Path(out["site"]).parent / "scores.png"
    write_timeline(rep.windows, timeline, alerts=rep.alerts)
    from flockwatch.features.output import atomic_path

    scored = Path(out["site"]).parent / "score.json"  # what the console shows
    with atomic_path(scored) as tmp:
        tmp.write_text(rep.to_json(), encoding="utf-8")
    typer.echo("")
    typer.echo(f"Done in {out['seconds']:.0f} s. MLflow store: {out['tracking_uri']}")
    for line in next_steps(out["tracking_uri"], Path(out["site"]), timeline, scored):
        typer.echo(line)


def next_steps(uri: str, site: Path, timeline: Path, scored: Path | None = None) -> list[str]:
    """What to run after the demo. On a tracking server the UI is the server's own page, and
    the later commands need its URI unless MLFLOW_TRACKING_URI names it."""
    remote = uri.lower().startswith(("http://", "https://"))
    store = (f" --tracking-uri {uri}"
             if remote and uri != os.environ.get("MLFLOW_TRACKING_URI") else "")
    browse = f"open {uri}" if remote else f"{script('mlflow')} ui --backend-store-uri {uri}"
    steps = [f"  Score timeline (PNG):    {timeline}",
             f"  Browse runs and models:  {browse}",
             f"  Score a capture again:   {script('flockwatch')} score {site}/attacks.pcap{store}",
             f"  Serve the model:         {script('flockwatch')} serve --port 8080{store}"]
    if scored is not None:
        steps.append(f"  Browse it in the console: {script('flockwatch')} serve --report {scored}"
                     "  (then open http://127.0.0.1:8080/)")
    return steps


def script(name: str) -> str:
    """The command ``name`` of this install (its scripts folder, wherever that is: a virtual
    environment, a user or a system install), or the bare name when it has none there."""
    path = Path(sysconfig.get_path("scripts")) / name
    return str(path) if path.exists() else name


def run_demo(echo: Any = print, *, hours: float = 2.0, learning_hours: float = 4.0,
             window_s: float = 120.0, seed: int = 7, tracking_uri: str | None = None
             ) -> dict[str, Any]:
    """Synthesize a site, train and register both models, score the attack capture."""
    from flockwatch.datasets.synth import ATTACK_KINDS, synthesize, synthesize_capture
    from flockwatch.features.home import flockwatch_home
    from flockwatch.models.store import configure
    from flockwatch.training.baseline import train_baseline
    from flockwatch.training.classifier import train_classifier

    t0 = time.monotonic()
    home = flockwatch_home()
    demo = home / "demo"
    if demo.exists():
        shutil.rmtree(demo)
    uri = configure(tracking_uri)
    echo(f"[1/5] Synthesizing a site: {learning_hours:g} h of normal traffic to learn from, "
         f"{hours:g} h with {len(ATTACK_KINDS)} injected attacks ({', '.join(ATTACK_KINDS)})")
    caps = synthesize(demo / "site", hours=hours, learning_hours=learning_hours, seed=seed)
    echo(f"      {demo / 'site'}: " + ", ".join(f"{c.path.name} {c.packets:,} packets"
                                                  for c in caps))
    echo("[2/5] Labelled captures for the classifier: 4 more site captures (1 h each)")
    lab = demo / "labelled"
    rows = []
    for i in range(4):
        name = f"site-{i}.pcap"
        synthesize_capture(lab / name, hours=1.0, seed=seed + 100 + i)
        from flockwatch.datasets.synth import HOSTS

        rows += [f"{name},{h.device_type},{h.mac},{h.name}" for h in HOSTS]
    (lab / "labels.csv").write_text("path,device_type,mac,device_instance\n" + "\n".join(rows)
                                    + "\n")
    echo("[3/5] Training the device-type classifier (LightGBM), logged to MLflow")
    clf = train_classifier(lab, register_name="flockwatch-classifier", tracking_uri=uri,
                           seed=seed, open_set_classes=3)
    m = clf.metrics
    echo(f"      capture-separated CV: macro F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f}"
         f"  -> {clf.model_uri}")
    echo(f"[4/5] Learning behavioural baselines ({window_s:g} s windows) and registering "
         "models:/flockwatch@champion")
    base = train_baseline([caps[0].path], window_s=window_s, classifier_uri=clf.model_uri,
                          register_name="flockwatch", promote=True, tracking_uri=uri, seed=seed)
    echo(f"      {base.devices} devices, {base.windows} learning windows -> "
         f"{base.model_uri} (champion)")
    lrn = base.learning
    echo(f"      learning period: {lrn['start']} .. {lrn['end']}, all of "
         + ", ".join(c["name"] for c in lrn["captures"]))
    echo(f"      ({learning_hours:g} h is a demo's learning period: every device's baseline is "
         "'thin', judged by the site-wide threshold; a sensor learns for days)")
    echo(f"[5/5] Scoring {caps[1].path.name} with models:/flockwatch@champion: operational "
         "traffic after learning, a capture the model did not learn from, so no window of it "
         "is in the learning period")
    from flockwatch.models.store import DEFAULT_MODEL_URI
    from flockwatch.serving.score import score_sources

    report = score_sources([caps[1].path], DEFAULT_MODEL_URI)
    return {"report": report, "site": demo / "site", "tracking_uri": uri,
            "seconds": time.monotonic() - t0, "attacks_csv": demo / "site" / "attacks.csv"}


def attack_summary(report: Any, attacks_csv: Path, window_s: float) -> list[str]:
    """For each injected attack, the first alert on its device (for the demo's last words)."""
    import datetime as dt

    import polars as pl

    truth = pl.read_csv(attacks_csv).filter(pl.col("path") == "attacks.pcap")
    lines = []
    for r in truth.iter_rows(named=True):
        start = dt.datetime.fromisoformat(r["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(r["end"].replace("Z", "+00:00"))
        hits = [a for a in report.alerts if a["mac"] == r["mac"]
                and dt.datetime.fromisoformat(a["end"].replace("Z", "+00:00")) > start
                and dt.datetime.fromisoformat(a["start"].replace("Z", "+00:00")) < end]
        if hits:
            first = hits[0]
            a_start = dt.datetime.fromisoformat(first["start"].replace("Z", "+00:00"))
            delay = max(0, int((a_start - start).total_seconds() // window_s) + 1)
            feats = ", ".join(t["feature"] for t in first["top_features"][:2])
            lines.append(f"  detected  {r['kind']:<17} on {r['device']:<12} window {delay} "
                         f"after start  ({feats})")
        else:
            lines.append(f"  MISSED    {r['kind']:<17} on {r['device']}")
    return lines
