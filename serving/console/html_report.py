"""``flockwatch score --html``: the console's pages for one scored capture, as one
self-contained HTML file (styles, chart library and data inlined) for analysts to mail around
and open offline.

Every page is a section of the file, shown when its anchor is the target (CSS ``:target``, no
script needed to navigate), the inventory otherwise. The same templates as the served console
render it, with links as anchors and without the forms that need a server. Its
Content-Security-Policy admits exactly the two inline scripts it carries (by hash): data from
traffic is escaped, and could not run if it were not.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from flockwatch.serving.console.data import (
    Filters,
    snapshot_of,
    sort_devices,
    visible_incidents,
)
from flockwatch.serving.console.netmap import network_map
from flockwatch.serving.console.pages import HERE, device_context, environment

#: Shows one page at a time: the targeted section, else the inventory (the last section).
_PAGING_CSS = """
section.page { display: none; }
section.page:target, section.page#page-inventory { display: block; }
section.page:target ~ section.page#page-inventory { display: none; }
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_html(doc: dict[str, Any], title: str = "flockwatch report") -> str:
    """A score report's JSON document (``ScoreReport.to_json``) -> one HTML file's text."""
    snap = snapshot_of(doc, title)
    env = environment(static=True)
    static = HERE / "static"
    devices = sort_devices(list(snap.devices), "alerts", True)
    device_pages = []
    for i, d in enumerate(devices):
        ctx = device_context(snap, {}, d)
        ctx.update(chart_id=f"chart-{i}", back="", anchor=env.filters["devlink"](
            d["device_id"])[1:])
        device_pages.append(ctx)
    incidents = visible_incidents(snap, {}, Filters(), include_expected=True)
    incident_pages = [{"inc": inc, "alerts": [{**snap.alerts[i], "expected": False}
                                              for i in inc["alerts"]], "hidden": 0}
                      for inc in incidents]
    css = (static / "console.css").read_text() + (static / "uPlot.min.css").read_text() \
        + _PAGING_CSS
    scripts = [(static / "uPlot.iife.min.js").read_text(), (static / "console.js").read_text()]
    csp = ("default-src 'none'; img-src data:; style-src " + _sha256(css)
           + "; script-src " + " ".join(_sha256(s) for s in scripts)
           + "; base-uri 'none'; form-action 'none'")
    return str(env.get_template("report.html").render(
        title=title, csp=csp, css=css, scripts=scripts, model=doc.get("model") or "",
        since=doc.get("since"), until=doc.get("until"),
        rows=devices, total=len(devices), all_total=len(devices), page=1, pages=1, args={},
        sort="alerts", order="desc", columns=_COLUMNS,
        device_pages=device_pages, incidents=incidents, incident_pages=incident_pages,
        by_id=snap.by_id, by_ip=snap.by_ip, m=network_map(snap), group="category",
        show_all=True, path=""))


_COLUMNS = [("device_id", "Device"), ("vendor", "Vendor"), ("device_type", "Type"),
            ("category", "Category"), ("baseline", "Baseline"), ("first_seen", "First seen"),
            ("last_seen", "Last seen"), ("alerts", "Alerts")]


def report_html(report: Any, title: str = "flockwatch report") -> str:
    """A ``ScoreReport`` -> one self-contained HTML file's text."""
    return render_html(json.loads(report.to_json()), title)
