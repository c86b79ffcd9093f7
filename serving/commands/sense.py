"""``flockwatch sense``: watch a live interface and alert as windows close."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.common import (
    DAY,
    YEAR,
    ModelOpt,
    TrackingOpt,
    check_output,
    duration_parser,
    fail,
    int_parser,
    seconds_parser,
)
from flockwatch.serving.options import CaptureTool, SyslogProtocol


def sense(
    interface: Annotated[str, typer.Option("--interface", "-i", help="Interface to watch.")],
    model: ModelOpt = None,
    alerts: Annotated[Path, typer.Option(help="JSON-lines alert file (appended); risk "
                                         "findings go there too, once per device and rule.")]
    = Path("flockwatch-alerts.jsonl"),
    syslog: Annotated[str | None, typer.Option(
        metavar="HOST[:PORT]", help="Also send CEF alerts to HOST:PORT ([IPV6]:PORT for an "
        "IPv6 address; the port defaults to 514).")] = None,
    syslog_protocol: Annotated[SyslogProtocol, typer.Option(
        case_sensitive=False, help="Transport for --syslog.")] = SyslogProtocol.udp,
    inventory_db: Annotated[Path | None, typer.Option(help="SQLite device inventory.")] = None,
    window: Annotated[float | None, typer.Option(
        parser=duration_parser(1.0, 7 * DAY), metavar="DURATION",
        help="Window length, e.g. 10s, 5m (default: the model's).")] = None,
    duration: Annotated[float | None, typer.Option(
        parser=seconds_parser(YEAR), metavar="SECONDS",
        help="Stop after this many seconds (default: run until SIGTERM/SIGINT).")] = None,
    state_every: Annotated[float, typer.Option(
        parser=seconds_parser(DAY), metavar="SECONDS",
        help="Log counters every N seconds.")] = 30.0,
    model_refresh: Annotated[float, typer.Option(
        parser=duration_parser(0.0, 7 * DAY), metavar="DURATION",
        help="Poll the registry alias this often and swap a newly promoted version in at the "
        "next window, without a restart, e.g. 5m; 0 never (a model folder is never "
        "polled).")] = 300.0,
    max_backlog: Annotated[int, typer.Option(
        parser=int_parser(1, 100_000), metavar="N",
        help="Closed windows kept on disk while scoring catches up; beyond it the oldest is "
        "given up, counted (windows_dropped) and logged.")] = 60,
    capture: Annotated[CaptureTool, typer.Option(
        case_sensitive=False,
        help="tcpdump: libpcap's kernel ring in a process of its own (needs tcpdump); socket: "
        "an AF_PACKET socket read in Python, which drops packets sooner.")]
    = CaptureTool.tcpdump,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Watch a live interface: score each window as it closes, alert on deviations.

    Example: flockwatch sense -i eth1 --syslog 10.0.0.5:514 --inventory-db devices.sqlite
    """
    import logging

    from flockwatch.features.errors import InputError
    from flockwatch.features.live import check_interface, tcpdump_path
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import (
        DEFAULT_MODEL_URI,
        ModelLoadError,
        configure,
        load_model,
        resolve_version,
    )
    from flockwatch.serving.options import parse_syslog_target
    from flockwatch.serving.sensor import run_sensor

    # Every option is checked before the model loads or a packet is captured.
    if syslog is not None:
        try:
            parse_syslog_target(syslog, syslog_protocol)
        except ValueError as exc:
            fail(f"--syslog: {exc}")
    check_output(alerts, "--alerts", append=True)
    if capture is CaptureTool.tcpdump:
        try:
            tcpdump_path()
        except InputError as exc:
            fail(exc)
    check_output(inventory_db, "--inventory-db")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    configure(tracking_uri)
    try:
        check_interface(interface)
        uri = model or DEFAULT_MODEL_URI
        m = load_model(uri)
        counters = run_sensor(interface, m, alerts_path=alerts, syslog=syslog,
                              model_uri=uri, model_version=resolve_version(uri),
                              refresh_s=parse_duration(model_refresh) or 0.0,
                              max_backlog=max_backlog, capture=capture.value,
                              syslog_protocol=syslog_protocol.value, inventory_db=inventory_db,
                              window_s=parse_duration(window), state_every_s=state_every,
                              max_seconds=duration)
    except (InputError, ModelLoadError, ValueError) as exc:
        fail(exc)
    typer.echo(counters.line(), err=True)
