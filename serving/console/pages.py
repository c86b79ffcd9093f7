"""The console's HTML pages: inventory, device, incidents, incident, network map, login.

Rendered on the server with Jinja2, autoescaping on for every template (host names, server
names and user agents come from traffic: attacker-controlled). Data for the chart travels as
a ``application/json`` block (``tojson`` escapes ``<``, ``>`` and ``&``), read by the one
vendored script file; no inline script, which the CSP header forbids anyway.
"""

from __future__ import annotations

import hmac
import math
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from flockwatch.serving.console.data import (
    SORTABLE,
    Decisions,
    Filters,
    Snapshot,
    Source,
    device_risks,
    paginate,
    parse_time,
    peers_of,
    sort_devices,
    visible_alerts,
    visible_incidents,
)
from flockwatch.serving.console.netmap import network_map
from flockwatch.serving.contract import AlertKind, Severity
from flockwatch.serving.rest import CONSOLE_COOKIE as COOKIE

HERE = Path(__file__).parent
PER_PAGE = 50
#: No inline script or style, nothing from elsewhere: sensors run offline, and traffic
#: values that slipped through escaping still could not run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
                    "Cache-Control": "no-store"}


def environment(static: bool = False) -> Any:
    """The templates' environment: links between pages are server paths, or with ``static``
    anchors inside one self-contained file (``flockwatch score --html``)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals["static"] = static
    if static:
        env.filters["devlink"] = lambda v: "#device-" + urllib.parse.quote(str(v), safe="")
        env.filters["inclink"] = lambda v: f"#incident-{int(v)}"
    else:
        env.filters["devlink"] = lambda v: "/devices/" + urllib.parse.quote(str(v), safe="")
        env.filters["inclink"] = lambda v: f"/incidents/{int(v)}"
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.0f}%"
    env.filters["num"] = _num
    env.filters["when"] = _when
    env.filters["qs"] = lambda d: urllib.parse.urlencode(
        {k: v for k, v in d.items() if v not in (None, "")})
    env.filters["path"] = lambda v: urllib.parse.quote(str(v), safe="")
    return env


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _when(v: Any) -> str:
    t = parse_time(v) if isinstance(v, str) else None
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ("" if v is None else str(v))


def safe_next(target: str | None) -> str:
    """A local path to go back to after a form, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def router(source: Source, decisions: Decisions, model_info: dict[str, Any],
           token: str | None) -> APIRouter:
    env = environment()
    pages = APIRouter(include_in_schema=False)

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            source=source.description, model=model_info, path=request.url.path,
            login=token is not None, **ctx)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def text(request: Request, name: str) -> str | None:
        v = request.query_params.get(name)
        return v.strip()[:200] if v and v.strip() else None

    def query_filters(request: Request) -> tuple[Filters, dict[str, Any]]:
        args = {k: text(request, k) for k in ("type", "category", "vendor", "severity", "q",
                                               "since", "until", "kind")}
        if args["severity"] not in (None, *(s.value for s in Severity)):
            args["severity"] = None
        if args["kind"] not in (None, *(k.value for k in AlertKind)):
            args["kind"] = None
        f = Filters(type=args["type"], category=args["category"], vendor=args["vendor"],
                    severity=args["severity"], q=args["q"], kind=args["kind"],
                    since=parse_time(args["since"]), until=parse_time(args["until"]))
        return f, args

    def page_number(request: Request) -> int:
        raw = request.query_params.get("page", "1")
        return max(1, int(raw)) if raw.isdigit() and len(raw) < 9 else 1

    @pages.get("/", response_class=HTMLResponse)
    def inventory(request: Request) -> Response:
        snap = source.snapshot()
        f, args = query_filters(request)
        sort = request.query_params.get("sort", "device_id")
        sort = sort if sort in SORTABLE else "device_id"
        order = "desc" if request.query_params.get("order") == "desc" else "asc"
        rows = sort_devices([d for d in snap.devices if f.device_ok(d)], sort, order == "desc")
        page = page_number(request)
        pg = paginate(rows, (page - 1) * PER_PAGE, PER_PAGE)
        pages_n = max(1, math.ceil(pg.total / PER_PAGE))
        types = sorted({d.get("device_type") or "unknown" for d in snap.devices})
        categories = sorted({d.get("category") or "unknown" for d in snap.devices})
        return render(request, "inventory.html", rows=pg.items, total=pg.total,
                      all_total=len(snap.devices), page=min(page, pages_n), pages=pages_n,
                      args=args, sort=sort, order=order, types=types, categories=categories,
                      severities=[s.value for s in Severity],
                      columns=[("device_id", "Device"), ("vendor", "Vendor"),
                               ("device_type", "Type"), ("category", "Category"),
                               ("baseline", "Baseline"), ("first_seen", "First seen"),
                               ("last_seen", "Last seen"), ("alerts", "Alerts"),
                               ("risk_score", "Risk")])

    @pages.get("/devices/{device_id}", response_class=HTMLResponse)
    def device(request: Request, device_id: str) -> Response:
        snap = source.snapshot()
        d = snap.by_id.get(device_id)
        if d is None:
            raise HTTPException(404, f"no device {device_id!r}")
        return render(request, "device.html", **device_context(snap, decisions.load(), d),
                      chart_id="chart", back=request.url.path)

    @pages.get("/incidents", response_class=HTMLResponse)
    def incident_list(request: Request) -> Response:
        snap = source.snapshot()
        f, args = query_filters(request)
        show_all = request.query_params.get("all") == "1"
        rows = visible_incidents(snap, decisions.load(), f, include_expected=show_all)
        page = page_number(request)
        pg = paginate(rows, (page - 1) * PER_PAGE, PER_PAGE)
        return render(request, "incidents.html", rows=pg.items, total=pg.total, page=page,
                      pages=max(1, math.ceil(pg.total / PER_PAGE)), args=args,
                      severities=[s.value for s in Severity], show_all=show_all,
                      by_id=snap.by_id, hidden=len(snap.incidents) - len(rows))

    @pages.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def incident(request: Request, incident_id: int) -> Response:
        snap = source.snapshot()
        marks = decisions.load()
        inc = next((i for i in snap.incidents if i["id"] == incident_id), None)
        if inc is None:
            raise HTTPException(404, f"no incident {incident_id}")
        show_all = request.query_params.get("all") == "1"
        members = [{**snap.alerts[i], "expected": snap.alerts[i]["key"] in marks}
                   for i in inc["alerts"]]
        shown = [a for a in members if show_all or not a["expected"]]
        return render(request, "incident.html", inc=inc, alerts=shown,
                      hidden=len(members) - len(shown), show_all=show_all, by_id=snap.by_id,
                      by_ip=snap.by_ip, back=request.url.path)

    @pages.post("/alerts/{key}/expected")
    async def mark(request: Request, key: str) -> Response:
        form = await _form(request)
        alert = next((a for a in source.snapshot().alerts if a["key"] == key), None)
        if alert is None:
            raise HTTPException(404, f"no alert {key!r}")
        if form.get("undo") == "1":
            decisions.unmark(key)
        else:
            decisions.mark(alert, form.get("note", ""))
        return RedirectResponse(safe_next(form.get("next")), status_code=303)

    @pages.get("/map", response_class=HTMLResponse)
    def netmap(request: Request) -> Response:
        snap = source.snapshot()
        group = "subnet" if request.query_params.get("group") == "subnet" else "category"
        marks = decisions.load()
        open_ = {a["device_id"] for a in snap.alerts if a["key"] not in marks}
        return render(request, "map.html", m=network_map(snap, group, open_), group=group)

    @pages.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return render(request, "login.html", next=safe_next(request.query_params.get("next")),
                      failed=False)

    @pages.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        nxt = safe_next(form.get("next"))
        given = form.get("token", "")
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            if token is None:
                return RedirectResponse(nxt, status_code=303)
            return render(request, "login.html", status=401, next=nxt, failed=True)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
        return resp

    @pages.post("/logout")
    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    return pages


def device_context(snap: Snapshot, marks: dict[str, dict[str, Any]], d: dict[str, Any]
                   ) -> dict[str, Any]:
    """What the device page shows of ``d``: its alerts, the chart's series (each scored
    window, or a sensor's alerting windows), its peers, the last top deviating features, its
    risk findings and its software's known vulnerabilities."""
    device_id = d["device_id"]
    alerts = visible_alerts(snap, marks, Filters(device=device_id), include_expected=True)
    wins = snap.windows.get(device_id, [])
    series: dict[str, Any]
    if wins:
        series = {"t": [_epoch(w["start"]) for w in wins],
                  "score": [w.get("anomaly_score") for w in wins],
                  "threshold": [w.get("threshold") for w in wins],
                  "alerting": [bool(w.get("anomalous")) and not w.get("learning")
                               for w in wins],
                  "end": [_epoch(w["end"]) for w in wins], "from": "windows"}
    else:  # a sensor keeps no windows: the alerting windows' scores are what it has
        scored = [a for a in alerts if a.get("anomaly_score") is not None]
        series = {"t": [_epoch(a["start"]) for a in scored],
                  "score": [a["anomaly_score"] for a in scored],
                  "threshold": [a["threshold"] for a in scored],
                  "alerting": [True for _ in scored],
                  "end": [_epoch(a["end"]) for a in scored], "from": "alerts"}
    top = next((w["top_features"] for w in reversed(wins) if w.get("anomalous")
                and w.get("top_features")), None)
    found, vulns = device_risks(snap, device_id)
    return {"d": d, "alerts": alerts, "series": series, "windows": len(wins),
            "anomalous": sum(series["alerting"]), "peers": peers_of(snap, d),
            "top": top or [], "findings": found, "vulns": vulns}


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (small: a token, a note, a path)."""
    body = await request.body()
    if len(body) > 16384:
        raise HTTPException(413, "form too large")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "form is not UTF-8") from None
    return {k: v for k, v in pairs}


def _epoch(v: str | None) -> float | None:
    t = parse_time(v)
    return t.timestamp() if t else None
