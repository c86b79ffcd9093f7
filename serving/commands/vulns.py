"""``flockwatch vulns``: the local CVE database (NVD CVE JSON 2.0 feeds and the CISA KEV
catalogue, downloaded by hand) and the matching of device software against it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.common import ScoreFormat, fail

app = typer.Typer(help="Known vulnerabilities, offline: import NVD CVE JSON 2.0 feeds and "
                  "the CISA KEV catalogue that you downloaded into a local SQLite database, "
                  "list what it holds, match device software against it. Nothing is "
                  "downloaded (see docs/vulns.md for where to get the files).",
                  no_args_is_help=True)

DbOpt = Annotated[Path | None, typer.Option(
    "--db", metavar="PATH", help="The CVE database (default: vulns.sqlite under "
    "FLOCKWATCH_HOME).")]


@app.command("update")
def vulns_update(
    feeds: Annotated[list[Path] | None, typer.Argument(
        metavar="FEED", show_default=False, readable=False,
        help="More NVD feed files (so that '--nvd-feed nvdcve-2.0-*.json.gz' works: the "
        "shell's list of files lands here).")] = None,
    nvd_feed: Annotated[list[Path] | None, typer.Option(
        "--nvd-feed", metavar="FILE", readable=False,
        help="An NVD CVE JSON 2.0 feed (nvdcve-2.0-YEAR.json or .json.gz, also the "
        "'modified' one); give it once per file, or follow it with several files.")] = None,
    kev: Annotated[Path | None, typer.Option(
        "--kev", metavar="FILE", readable=False,
        help="The CISA KEV catalogue (known_exploited_vulnerabilities.json): replaces the "
        "known-exploited list.")] = None,
    db: DbOpt = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start from an empty database instead of adding to the current "
        "one.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Import NVD feeds (and the KEV catalogue) into the CVE database, atomically.

    The new database is written beside the old one and replaces it only when every file was
    read: a malformed feed stops the import with one line naming the file and the entry, and
    the database stays as it was. CVEs already there are kept (a CVE imported again keeps its
    latest version; rejected CVEs are removed), unless --fresh.

    Example: flockwatch vulns update --nvd-feed nvdcve-2.0-2024.json.gz
    nvdcve-2.0-modified.json.gz --kev known_exploited_vulnerabilities.json
    """
    from flockwatch.serving.vulns import default_db, update

    files = [*(nvd_feed or []), *(feeds or [])]
    if not files and kev is None:
        raise typer.BadParameter("give at least one NVD feed file or the KEV file",
                                 param_hint="--nvd-feed")
    target = db if db is not None else default_db()
    from flockwatch.serving.progress import importing

    with importing(quiet) as progress:
        summary = update(files, kev=kev, db=target, fresh=fresh, progress=progress)
    d = summary.to_dict()
    kev_text = f"; KEV: {d['kev']:,} entries" if d["kev"] is not None else ""
    typer.echo(f"{d['feeds']} feed(s), {d['entries']:,} entries: {d['cves']:,} CVEs imported "
               f"({d['rejected']:,} rejected removed), {d['cpe_rows']:,} CPE match rows"
               f"{kev_text} -> {target} ({d['total_cves']:,} CVEs, {d['total_kev']:,} KEV)")


@app.command("list")
def vulns_list(
    db: DbOpt = None,
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
) -> None:
    """What the CVE database holds: counts, and each feed imported with its timestamp.

    The CVEs, those with CPE criteria, the CPE match rows, the products named, the KEV
    entries, and per feed file its own timestamp (how fresh the data is) and when it was
    imported.

    Example: flockwatch vulns list
    """
    from flockwatch.features.output import to_json
    from flockwatch.serving.vulns import describe_db

    d = describe_db(db)
    if format is ScoreFormat.json:
        typer.echo(to_json(d, indent=2))
        return
    lines = [f"{d['db']} (updated {d['updated'] or '?'})",
             f"  {d['cves']:,} CVEs, {d['cves_with_cpe']:,} with CPE criteria, "
             f"{d['cpe_rows']:,} CPE match rows, {d['products']:,} products, "
             f"{d['kev']:,} known exploited (KEV)"]
    if d["feeds"]:
        width = max(len(f["file"]) for f in d["feeds"])
        lines.append(f"  {'feed':<{width}}  kind  {'feed timestamp':<24} {'imported':<20} "
                     "entries")
        for f in d["feeds"]:
            lines.append(f"  {f['file']:<{width}}  {f['kind']:<4}  {f['timestamp'] or '-':<24} "
                         f"{f['imported']:<20} {f['entries']:,}")
    typer.echo("\n".join(lines))


@app.command("match")
def vulns_match(
    software: Annotated[Path, typer.Argument(
        metavar="SOFTWARE", readable=False, show_default=False,
        help="Device software rows (the columns of device_software: device_id, vendor, "
        "product, version, cpe) as a JSON array of objects, JSON lines, CSV or Parquet.")],
    db: DbOpt = None,
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
) -> None:
    """Match device software against the CVE database (one row per device and CVE).

    Each row has the CVE's CVSS score and version, severity, the KEV flag and what the match
    was made on: the NVD's CPE criteria and version range, and the product as seen.

    Example: flockwatch vulns match software.json --format json
    """
    from flockwatch.features.output import to_json
    from flockwatch.serving.vulns import connect, default_db, device_vulnerabilities

    frame = _read_software(software)
    path = db if db is not None else default_db()
    connect(path).close()  # no database here is an error for this command, not "no CVEs"
    found = device_vulnerabilities(frame, path)
    if format is ScoreFormat.json:
        typer.echo(to_json([v.to_dict() for v in found], indent=2))
        return
    if not found:
        typer.echo(f"no known vulnerabilities in {frame.height} software row(s)")
        return
    lines = [f"{'device':<20} {'cve':<16} {'cvss':>4} {'sev':<8} kev  product / matched on"]
    for v in found:
        score = f"{v.cvss:.1f}" if v.cvss is not None else "-"
        sev = v.severity.value if v.severity else "-"
        lines.append(f"{v.device_id[:20]:<20} {v.cve:<16} {score:>4} {sev:<8} "
                     f"{'yes' if v.kev else 'no ':<4} {v.product} / {v.matched_on}")
    typer.echo("\n".join(lines))


def _read_software(path: Path) -> Any:
    """A software table from a file, or one line saying why not."""
    import json

    import polars as pl

    from flockwatch.features.errors import InputError, stat_input

    stat_input(path)
    try:
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        elif suffix == ".csv":
            df = pl.read_csv(path, infer_schema_length=0)
        else:
            text = path.read_text(encoding="utf-8")
            rows = (json.loads(text) if text.lstrip().startswith("[")
                    else [json.loads(line) for line in text.splitlines() if line.strip()])
            if not all(isinstance(r, dict) for r in rows):
                raise InputError(str(path), "expected a JSON array of objects or JSON lines")
            df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(
                schema={"device_id": pl.String})
    except InputError:
        raise
    except (ValueError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot read the software table: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    if "device_id" not in df.columns:
        fail(f"{path}: no 'device_id' column (expected device_software's columns)")
    for col in ("vendor", "product", "version", "cpe"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, pl.String).alias(col))
    return df.with_columns(pl.col(c).cast(pl.String) for c in
                           ("device_id", "vendor", "product", "version", "cpe"))
