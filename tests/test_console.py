"""The web console and its JSON API (issue 13): a real `flockwatch serve` (FlockwatchServer on
uvicorn) over the demo's scored site, queried over HTTP on 127.0.0.1 and driven in Debian's
Chromium with Playwright (never a downloaded browser)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flockwatch.serving.cli import app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EVIL_HOST = '<script>alert("dhcp")</script>'
EVIL_SNI = "<script>alert(1)</script>.evil.example"


# -- fixtures ----------------------------------------------------------------------------------

def write_xss_capture(path: Path) -> None:
    """A capture whose workstation announces ``EVIL_HOST`` over DHCP and asks for ``EVIL_SNI``
    over DNS and TLS: traffic is attacker-controlled, and these land in the inventory."""
    import numpy as np

    from flockwatch.datasets.synth import DEFAULT_START, GATEWAY, dhcp_request, host
    from flockwatch.datasets.synth.traffic import Traffic

    tr = Traffic(np.random.default_rng(1))
    h = host("workstation")
    t0 = DEFAULT_START.timestamp()
    for k in range(3):
        tr.udp_exchange(t0 + 60 * k, h.ip, GATEWAY.ip, 67, dhcp_request(7 + k, h.mac, EVIL_HOST),
                        None, sport=68)
        tr.resolve(t0 + 60 * k + 1, h, EVIL_SNI, "203.0.113.9")
        tr.tls(t0 + 60 * k + 2, h, EVIL_SNI, "203.0.113.9", 2, 2)
    tr.w.write(path)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What `make demo` builds (the synthetic site, both models registered, the attack
    capture scored), written as `flockwatch score --format json` writes it, plus the XSS
    capture scored by the same model."""
    from flockwatch.models.store import DEFAULT_MODEL_URI
    from flockwatch.serving.commands.demo import run_demo
    from flockwatch.serving.score import score_sources

    home = tmp_path_factory.mktemp("console-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOCKWATCH_HOME", str(home))
        uri = f"sqlite:///{home / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        out = run_demo(lambda *a: None, tracking_uri=uri)
        report = home / "score.json"
        report.write_text(out["report"].to_json())
        evil = home / "xss.pcap"
        write_xss_capture(evil)
        xss = home / "xss.json"
        xss.write_text(score_sources([evil], DEFAULT_MODEL_URI, tracking_uri=uri).to_json())
    attacks = [r.split(",") for r in (out["site"] / "attacks.csv").read_text().splitlines()[1:]]
    return {"report": report, "xss": xss, "rep": out["report"], "attacks": attacks,
            "home": home, "uri": uri, "site": out["site"], "evil": evil}


class Served:
    def __init__(self, source: Any, host: str = "127.0.0.1", token: str | None = None,
                 decisions: Path | None = None) -> None:
        from flockwatch.serving.rest import FlockwatchServer

        self.server = FlockwatchServer(None, host, 0, token=token, source=source,
                                       decisions_path=decisions)
        self.server.start_background()
        self.port = self.server.port
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        return self.call("GET", path, headers=headers)

    def call(self, method: str, path: str, body: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        kind = r.getheader("content-type", "")
        return r.status, json.loads(data) if "json" in kind else data.decode(), r

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(demo: dict[str, Any], tmp_path: Path):
    from flockwatch.serving.console import ReportSource

    report = tmp_path / "score.json"
    shutil.copy(demo["report"], report)  # decisions are written beside it
    srv = Served(ReportSource(report))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def chrome():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (the dev extra has it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def tab(chrome):
    ctx = chrome.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.errors, pg.dialogs = errors, dialogs
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots of each page: $FLOCKWATCH_ARTIFACTS, else a temp folder."""
    env = os.environ.get("FLOCKWATCH_ARTIFACTS")
    d = Path(env) if env else tmp_path_factory.mktemp("console-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- without the demo ----------------------------------------------------------------------------

def test_serve_rejects_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"devices": 3}')
    r = CliRunner().invoke(app, ["serve", "--report", str(bad)])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"flockwatch: error: {bad}: not a flockwatch score report (expected the JSON of "
        "`flockwatch score --format json`, with devices, windows, alerts and incidents)"]
    r = CliRunner().invoke(app, ["serve", "--inventory-db", str(tmp_path / "no.db")])
    assert r.exit_code == 1 and "--inventory-db" in r.output and "no such file" in r.output
    r = CliRunner().invoke(app, ["serve", "--report", str(bad), "--alerts", str(bad)])
    assert r.exit_code == 1 and "not both" in r.output


def test_console_only_without_a_model(tmp_path: Path) -> None:
    """An empty report is a report: the console serves it, and /invocations says there is
    no model rather than failing."""
    from flockwatch.serving.console import ReportSource

    rep = tmp_path / "empty.json"
    rep.write_text(json.dumps({"devices": [], "windows": [], "alerts": [], "incidents": [],
                               "model": ""}))
    srv = Served(ReportSource(rep))
    try:
        status, body, _ = srv.call("POST", "/invocations", "[]",
                                   {"Content-Type": "application/json"})
        assert status == 503 and body["error_code"] == "NO_MODEL"
        assert srv.get("/api/devices")[1] == {"total": 0, "offset": 0, "limit": 50, "items": []}
        status, html, resp = srv.get("/")
        assert status == 200 and "0 of 0 devices" in html
        assert "script-src 'self'" in resp.getheader("content-security-policy")
        assert srv.get("/ping")[0] == 200
    finally:
        srv.close()


# -- the API over the demo -------------------------------------------------------------------------

@pytest.mark.slow
def test_api_devices_filters_and_pages(served: Served, demo: dict[str, Any]) -> None:
    rep = demo["rep"]
    status, page, _ = served.get("/api/devices?limit=5&sort=alerts&order=desc")
    assert status == 200 and page["total"] == rep.devices.height and len(page["items"]) == 5
    counts = [d["alerts"] for d in page["items"]]
    assert counts == sorted(counts, reverse=True)
    rest = served.get("/api/devices?limit=5&offset=5&sort=alerts&order=desc")[1]["items"]
    assert not {d["device_id"] for d in rest} & {d["device_id"] for d in page["items"]}
    # category: the devices identification placed there, and "unknown" for the others
    cats = {d["device_id"]: d["category"] for d in rep.devices.iter_rows(named=True)}
    some = next(c for c in cats.values() if c)
    got = served.get(f"/api/devices?category={some}&limit=1000")[1]["items"]
    assert {d["device_id"] for d in got} == {k for k, c in cats.items() if c == some}
    unknown = served.get("/api/devices?category=unknown&limit=1000")[1]["total"]
    assert unknown == sum(c is None for c in cats.values())
    types = {d["device_id"]: d["device_type"] for d in rep.devices.iter_rows(named=True)}
    got = served.get("/api/devices?type=voip_phone")[1]["items"]
    assert {d["device_id"] for d in got} == {k for k, t in types.items() if t == "voip_phone"}
    vendors = served.get("/api/devices?vendor=polycom")[1]["items"]
    assert vendors and all("Polycom" in d["vendor"] for d in vendors)
    high = served.get("/api/devices?severity=high&limit=1000")[1]["items"]
    assert high and all(d["severity"] == "high" for d in high)
    assert served.get("/api/devices?since=2030-01-01T00:00:00Z")[1]["total"] == 0
    # bad parameters: a JSON 400 naming the parameter
    status, body, _ = served.get("/api/devices?limit=0")
    assert status == 400 and body["message"].startswith("limit:")
    status, body, _ = served.get("/api/devices?sort=password")
    assert status == 400 and body["message"].startswith("sort:")


@pytest.mark.slow
def test_api_device_windows_alerts_incidents_model(served: Served,
                                                   demo: dict[str, Any]) -> None:
    rep = demo["rep"]
    dev = max(rep.devices.iter_rows(named=True), key=lambda d: d["alerts"])
    did = urllib.parse.quote(dev["device_id"])
    status, detail, _ = served.get(f"/api/devices/{did}")
    assert status == 200 and detail["device"]["device_id"] == dev["device_id"]
    assert detail["peers"] and detail["alerts"] == dev["alerts"]
    wins = served.get(f"/api/devices/{did}/windows?limit=1000")[1]
    mine = rep.windows.filter(rep.windows["device_id"] == dev["device_id"])
    assert wins["total"] == mine.height == detail["windows"]
    assert [w["start"] for w in wins["items"]] == sorted(w["start"] for w in wins["items"])
    assert served.get("/api/devices/nope")[0] == 404
    alerts = served.get("/api/alerts?limit=1000")[1]
    assert alerts["total"] == len(rep.alerts)
    assert all(a["expected"] is False and len(a["key"]) == 16 for a in alerts["items"])
    kinds = served.get("/api/alerts?kind=new_peer&limit=1000")[1]["items"]
    assert kinds and {a["kind"] for a in kinds} == {"new_peer"}
    incs = served.get("/api/incidents")[1]
    assert incs["total"] == len(rep.incidents)
    one = served.get(f"/api/incidents/{incs['items'][0]['id']}")[1]
    assert [a["index"] for a in one["alerts"]] == incs["items"][0]["alerts"]
    model = served.get("/api/model")[1]
    assert model["data_model"] == "models:/flockwatch@champion"
    assert model["data_source"] == "report score.json"
    doc = served.get("/api/openapi.json")[1]
    for p in ("/api/devices", "/api/devices/{device_id}", "/api/devices/{device_id}/windows",
              "/api/alerts", "/api/incidents", "/api/incidents/{incident_id}", "/api/model"):
        assert p in doc["paths"], p
    params = {p["name"] for p in doc["paths"]["/api/devices"]["get"]["parameters"]}
    assert {"type", "category", "vendor", "severity", "since", "until", "offset",
            "limit"} <= params


@pytest.mark.slow
def test_api_mark_expected_hides_and_persists(demo: dict[str, Any], tmp_path: Path) -> None:
    from flockwatch.serving.console import ReportSource

    report = tmp_path / "score.json"
    shutil.copy(demo["report"], report)
    srv = Served(ReportSource(report))
    try:
        first = srv.get("/api/alerts?limit=1")[1]["items"][0]
        total = srv.get("/api/alerts")[1]["total"]
        status, rec, _ = srv.call("POST", f"/api/alerts/{first['key']}/expected?note=backup+job")
        assert status == 200 and rec["note"] == "backup job"
        assert srv.get("/api/alerts")[1]["total"] == total - 1
        again = srv.get("/api/alerts?include_expected=true&limit=1000")[1]["items"]
        assert next(a for a in again if a["key"] == first["key"])["expected"] is True
        # another site's page cannot post it (no token on loopback: the origin is checked)
        status, _, _ = srv.call("POST", f"/api/alerts/{first['key']}/expected",
                                headers={"Origin": "http://evil.example"})
        assert status == 403
    finally:
        srv.close()
    stored = json.loads((tmp_path / "score.json.expected.json").read_text())
    assert [d["key"] for d in stored["expected"]] == [first["key"]]
    assert report.read_bytes() == demo["report"].read_bytes()  # the data is never written
    srv = Served(ReportSource(report))  # a new server reads the decision back
    try:
        assert srv.get("/api/alerts")[1]["total"] == total - 1
        assert srv.call("DELETE", f"/api/alerts/{first['key']}/expected")[1] == {
            "removed": True}
        assert srv.get("/api/alerts")[1]["total"] == total
    finally:
        srv.close()


def test_a_device_whose_alerts_are_all_expected_has_no_severity(demo: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """Clearing noise clears the device too: its alert count and severity in the inventory
    (and the severity filter) count only the alerts not marked expected."""
    from flockwatch.serving.console import ReportSource

    report = tmp_path / "score.json"
    shutil.copy(demo["report"], report)
    srv = Served(ReportSource(report))
    try:
        alerts = srv.get("/api/alerts?limit=1000")[1]["items"]
        dev = alerts[0]["device_id"]
        mine = [a for a in alerts if a["device_id"] == dev]
        before = srv.get(f"/api/devices/{dev}")[1]["device"]
        assert before["severity"] is not None and before["alerts"] >= len(mine)
        for a in mine[:-1]:
            srv.call("POST", f"/api/alerts/{a['key']}/expected")
        left = srv.get(f"/api/devices/{dev}")[1]["device"]
        assert left["alerts"] == 1 and left["severity"] == mine[-1]["severity"]
        srv.call("POST", f"/api/alerts/{mine[-1]['key']}/expected")
        cleared = srv.get(f"/api/devices/{dev}")[1]["device"]
        assert cleared["alerts"] == 0 and cleared["severity"] is None
        listed = srv.get("/api/devices?severity=low&limit=1000")[1]["items"]
        assert dev not in {d["device_id"] for d in listed}
    finally:
        srv.close()


def test_device_page_lists_its_findings_and_vulnerabilities(demo: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """A device's risk findings (most severe first) and its software's CVEs (exploited ones
    first) are on its page and in the API's device record; values from traffic are text."""
    from flockwatch.serving.console import ReportSource

    doc = json.loads(Path(demo["report"]).read_text())
    dev = doc["devices"][0]["device_id"]
    evil = '<script>alert("banner")</script>'
    doc["findings"] = [f for f in doc.get("findings") or [] if f["device_id"] != dev] + [
        {"kind": "obsolete_tls", "severity": "medium", "device_id": dev, "mac": dev,
         "ip": None, "first_seen": "2026-03-02T08:00:00Z", "last_seen": "2026-03-02T09:00:00Z",
         "flows": ["10.0.0.5:40000 -> 10.0.0.9:443/tcp"], "message": "TLS 1.0 to " + evil},
        {"kind": "cleartext_credentials", "severity": "high", "device_id": dev, "mac": dev,
         "ip": None, "first_seen": "2026-03-02T08:10:00Z", "last_seen": "2026-03-02T08:10:00Z",
         "flows": [f"10.0.0.5:{40001 + i} -> 10.0.0.9:23/tcp" for i in range(5)],
         "message": "a Telnet login was sent in clear (the secret is not kept)"}]
    doc["vulnerabilities"] = [
        {"cve": "CVE-2016-6210", "cvss": 5.9, "cvss_version": "3.1", "severity": "medium",
         "kev": False, "matched_on": "cpe:2.3:a:openbsd:openssh:*:*:*:*:*:*:*:* < 7.4",
         "product": "OpenBSD OpenSSH 7.2p2 " + evil, "device_id": dev},
        {"cve": "CVE-2018-15473", "cvss": 5.3, "cvss_version": "3.1", "severity": "medium",
         "kev": True, "matched_on": "cpe:2.3:a:openbsd:openssh:*:*:*:*:*:*:*:* < 7.8",
         "product": "OpenBSD OpenSSH 7.2p2", "device_id": dev}]
    report = tmp_path / "score.json"
    report.write_text(json.dumps(doc))
    srv = Served(ReportSource(report))
    try:
        detail = srv.get(f"/api/devices/{urllib.parse.quote(dev)}")[1]
        assert [f["kind"] for f in detail["findings"]] == ["cleartext_credentials",
                                                           "obsolete_tls"]
        assert [v["cve"] for v in detail["vulnerabilities"]] == ["CVE-2018-15473",
                                                                 "CVE-2016-6210"]
        status, html, _ = srv.get(f"/devices/{urllib.parse.quote(dev)}")
        assert status == 200
        risk = html[html.index('<section class="risk">'):html.index("Anomaly score over time")]
        assert risk.index("cleartext credentials") < risk.index("obsolete tls")
        assert risk.index("CVE-2018-15473") < risk.index("CVE-2016-6210")
        assert "CISA KEV" in risk and "and 2 more" in risk
        assert "<script>" not in risk and "&lt;script&gt;" in risk
        other = doc["devices"][1]["device_id"]
        html = srv.get(f"/devices/{urllib.parse.quote(other)}")[1]
        if not any(f["device_id"] == other for f in doc["findings"]):
            assert "No risk findings." in html
        assert "None known for the software it showed" in html
    finally:
        srv.close()


@pytest.mark.slow
def test_sensor_files_are_followed_as_the_sensor_writes(demo: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """The live source: the sensor's own Inventory and JsonlSink write the files; the
    console shows what is there and picks up what is added, without a restart."""
    from flockwatch.serving.alerts import JsonlSink
    from flockwatch.serving.console import SensorSource
    from flockwatch.serving.sensor import Inventory

    rep = demo["rep"]
    db, path = tmp_path / "inventory.db", tmp_path / "alerts.jsonl"
    inv = Inventory(db)
    inv.update(rep.devices.head(5))
    sink = JsonlSink(path)
    for a in rep.alerts[:3]:
        sink.send(a)
    sink.close()
    srv = Served(SensorSource(db, path))
    try:
        first = set(rep.devices["device_id"].head(5))
        named = {a["device_id"] for a in rep.alerts[:3]}  # listed from their alerts till then
        assert srv.get("/api/devices")[1]["total"] == len(first | named)
        assert srv.get("/api/alerts")[1]["total"] == 3
        inv.update(rep.devices)
        with path.open("a") as f:  # a partial last line is not read until it is complete
            for a in rep.alerts[3:6]:
                f.write(json.dumps(a) + "\n")
            f.write('{"kind": "new_pe')
        assert srv.get("/api/devices")[1]["total"] == rep.devices.height
        assert srv.get("/api/alerts")[1]["total"] == 6
        with path.open("a") as f:
            f.write('er"}\n')  # not an alert: skipped
        assert srv.get("/api/alerts")[1]["total"] == 6
        dev = rep.alerts[0]["device_id"]
        page = srv.get(f"/devices/{urllib.parse.quote(dev)}")[1]
        assert "Alerting windows (the sensor keeps no other scores)" in page
        incs = srv.get("/api/incidents")[1]["items"]
        assert {i["id"] for i in incs} == {a["incident"] for a in rep.alerts[:6]}
        assert srv.get("/api/model")[1]["data_source"] == "sensor inventory.db + alerts.jsonl"
    finally:
        srv.close()
        inv.close()
    # alerts alone: the devices they name are listed from what the alerts say
    srv = Served(SensorSource(None, path))
    try:
        devs = srv.get("/api/devices?limit=1000")[1]["items"]
        assert {d["device_id"] for d in devs} == {a["device_id"] for a in rep.alerts[:6]}
        assert all(d["alerts"] >= 1 and d["first_seen"] for d in devs)
    finally:
        srv.close()


@pytest.mark.slow
def test_off_loopback_needs_the_token(demo: dict[str, Any], tmp_path: Path) -> None:
    """Bound to every address with a token: the API, the pages and the OpenAPI document all
    refuse without it (the test only ever connects to 127.0.0.1)."""
    from flockwatch.serving.console import ReportSource
    from flockwatch.serving.rest import FlockwatchServer

    with pytest.raises(ValueError, match="needs --token"):
        FlockwatchServer(None, "0.0.0.0", 0, source=ReportSource(demo["report"]))
    srv = Served(ReportSource(demo["report"]), host="0.0.0.0", token="s3cret")
    try:
        for path in ("/api/devices", "/api/openapi.json", "/ping"):
            assert srv.get(path)[0] == 401, path
        status, _, resp = srv.get("/incidents", {"Accept": "text/html"})
        assert status == 303 and resp.getheader("location") == "/login?next=/incidents"
        assert srv.get("/api/devices", {"Authorization": "Bearer s3cret"})[0] == 200
        status, html, _ = srv.call("POST", "/login", "token=wrong&next=/",
                                   {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 401 and "Wrong token" in html
        status, _, resp = srv.call("POST", "/login", "token=s3cret&next=//evil.example/",
                                   {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303 and resp.getheader("location") == "/"
        cookie = resp.getheader("set-cookie")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        jar = cookie.split(";")[0]
        assert srv.get("/api/devices", {"Cookie": jar})[0] == 200
        assert srv.get("/", {"Cookie": jar, "Accept": "text/html"})[0] == 200
        assert srv.get("/", {"Cookie": "flockwatch_token=guess",
                             "Accept": "text/html"})[0] == 303
    finally:
        srv.close()


# -- in the browser ------------------------------------------------------------------------------

@pytest.mark.slow
def test_browser_inventory_filter_device_chart(served: Served, tab, demo: dict[str, Any],
                                               artifacts: Path) -> None:
    rep = demo["rep"]
    tab.goto(served.base + "/")
    rows = tab.locator("#inventory tbody tr.device")
    assert rows.count() == rep.devices.height
    text = tab.locator("#inventory").inner_text()
    for mac in rep.devices["device_id"]:
        assert mac in text
    tab.screenshot(path=str(artifacts / "inventory.png"), full_page=True)
    # filter by category, through the form as a person would
    cats = {d["device_id"]: d["category"] for d in rep.devices.iter_rows(named=True)}
    some = next(c for c in cats.values() if c)
    tab.select_option("#category", some)
    tab.click("form.filters button[type=submit]")
    tab.wait_for_url("**category=*")
    want = sorted(k for k, c in cats.items() if c == some)
    assert rows.count() == len(want)
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == want
    # sort by alerts, most first
    tab.goto(served.base + "/?sort=alerts&order=desc")
    first = rows.first.locator("td:first-child").inner_text()
    assert first == max(rep.devices.iter_rows(named=True), key=lambda d: d["alerts"])["device_id"]
    # a device page draws its chart (uPlot, vendored) from the scored windows
    rows.first.locator("a").click()
    tab.wait_for_selector("#chart canvas")
    n = rep.windows.filter(rep.windows["device_id"] == first).height
    assert tab.get_attribute("#chart", "data-drawn") == str(n)
    assert tab.locator("#chart .u-legend").count() == 1
    assert "top deviating features" in tab.content()
    # why it is its type: the report's type_evidence, one row each
    why = next(d for d in rep.devices.iter_rows(named=True) if d["device_id"] == first)
    assert why["type_evidence"] and all(e["weight"] > 0 for e in why["type_evidence"])
    assert tab.locator("table.type-evidence tbody tr").count() == len(why["type_evidence"])
    tab.screenshot(path=str(artifacts / "device.png"), full_page=True)
    tab.goto(served.base + "/map")
    assert tab.locator("svg.netmap .node").count() >= rep.devices.height
    assert tab.locator("svg.netmap .node.alerting").count() >= 1
    tab.screenshot(path=str(artifacts / "map.png"), full_page=True)
    assert not tab.errors, tab.errors


@pytest.mark.slow
def test_browser_incidents_and_mark_as_expected(served: Served, tab, demo: dict[str, Any],
                                                artifacts: Path) -> None:
    tab.goto(served.base + "/incidents")
    rows = tab.locator("#incidents tbody tr.incident")
    # every injected attack is listed: an incident on its attacking device, in its time
    assert rows.count() == len(demo["rep"].incidents) >= len(demo["attacks"])
    listed = {t.strip() for t in rows.locator("td:first-child").all_inner_texts()}
    for _, kind, _, mac, _, _, start, end in demo["attacks"]:
        found = [i["id"] for i in demo["rep"].incidents if mac in i["devices"]
                 and i["start"] < end and i["end"] > start]
        assert found and f"#{found[0]}" in listed, kind
    tab.screenshot(path=str(artifacts / "incidents.png"), full_page=True)
    rows.first.locator("a").first.click()
    tab.wait_for_selector("article.alert")
    alerts = tab.locator("article.alert")
    before = alerts.count()
    assert tab.locator("table.features").count() >= 1  # observed vs expected
    assert tab.locator("table.flows tbody tr").count() >= 1  # the flows behind the alerts
    tab.screenshot(path=str(artifacts / "incident.png"), full_page=True)
    key = alerts.first.get_attribute("id")
    alerts.first.locator("form.mark button").click()
    tab.wait_for_load_state()
    assert tab.locator(f"#{key}").count() == 0
    assert alerts.count() == before - 1
    assert "marked expected" in tab.content()
    assert not tab.errors, tab.errors


@pytest.mark.slow
def test_browser_shows_traffic_values_as_text(demo: dict[str, Any], tab,
                                              artifacts: Path) -> None:
    """DHCP host name and TLS server name carrying <script>: shown, never run."""
    from flockwatch.serving.console import ReportSource

    doc = json.loads(demo["xss"].read_text())
    dev = next(d for d in doc["devices"] if EVIL_HOST in d["hostnames"])
    assert EVIL_SNI in dev["server_names"]
    srv = Served(ReportSource(demo["xss"]))
    try:
        tab.goto(srv.base + "/")
        row = tab.locator("#inventory tbody tr.device", has_text=dev["device_id"])
        cell = row.locator("td:nth-child(4)")
        assert cell.inner_text() == EVIL_HOST
        tab.goto(srv.base + f"/devices/{urllib.parse.quote(dev['device_id'])}")
        values = tab.locator("code.value").all_inner_texts()
        assert EVIL_HOST in values and EVIL_SNI in values
        tab.goto(srv.base + "/map")
        assert EVIL_HOST in (tab.locator("svg.netmap").text_content() or "")
        tab.screenshot(path=str(artifacts / "xss.png"), full_page=True)
        assert tab.dialogs == []  # no alert() ran
        html = srv.get("/")[1]
        assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    finally:
        srv.close()


@pytest.mark.slow
def test_browser_off_loopback_refuses_then_logs_in(demo: dict[str, Any], tab,
                                                   artifacts: Path) -> None:
    from flockwatch.serving.console import ReportSource

    srv = Served(ReportSource(demo["report"]), host="0.0.0.0", token="s3cret")
    try:
        tab.goto(srv.base + "/incidents")
        assert tab.url.startswith(srv.base + "/login")
        assert tab.locator("#incidents").count() == 0
        resp = tab.request.get(srv.base + "/api/devices")
        assert resp.status == 401
        tab.fill("input[name=token]", "wrong")
        tab.click("form.login button")
        assert "Wrong token" in tab.content()
        tab.screenshot(path=str(artifacts / "login.png"))
        tab.fill("input[name=token]", "s3cret")
        tab.click("form.login button")
        tab.wait_for_selector("#incidents")
        assert tab.url == srv.base + "/incidents"
        cookie = next(c for c in tab.context.cookies() if c["name"] == "flockwatch_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert tab.evaluate("document.cookie") == ""  # script cannot read the token
    finally:
        srv.close()


# -- the HTML report ---------------------------------------------------------------------------

@pytest.mark.slow
def test_score_html_is_one_offline_file(demo: dict[str, Any], tmp_path: Path, tab,
                                        artifacts: Path) -> None:
    """`flockwatch score --html` over the demo's attack capture: one file, nothing loaded from
    anywhere, within 5 MB, every page reachable by its anchors and the charts drawn."""
    import re

    out = tmp_path / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOCKWATCH_HOME", str(demo["home"]))
        r = CliRunner().invoke(app, ["score", str(demo["site"] / "attacks.pcap"), "--html",
                                     str(out), "-o", str(tmp_path / "r.json"), "-q",
                                     "--tracking-uri", demo["uri"]])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert len(html.encode()) <= 5 * 1024 * 1024
    assert not re.search(r"""(src|href)=["']?(https?:|//|/static)""", html)
    assert "Content-Security-Policy" in html
    rep = demo["rep"]
    tab.goto(out.as_uri())
    rows = tab.locator("#inventory tbody tr.device")
    assert rows.count() == rep.devices.height
    rows.first.locator("a").click()
    assert tab.locator("section.page:visible .chart canvas").count() == 1
    tab.screenshot(path=str(artifacts / "html-device.png"))
    tab.click("header nav a[href='#page-incidents']")
    assert tab.locator("#incidents tbody tr.incident").count() == len(rep.incidents)
    tab.locator("#incidents tbody tr.incident a").first.click()
    assert tab.locator("section.page:visible article.alert").count() >= 1
    assert tab.locator("form.mark").count() == 0  # nothing that needs a server
    tab.click("header nav a[href='#page-map']")
    assert tab.locator("section.page:visible svg.netmap").count() == 1
    assert not tab.errors, tab.errors
    # traffic values stay text in the file too
    evil = tmp_path / "xss.html"
    from flockwatch.serving.console.html_report import render_html

    evil.write_text(render_html(json.loads(demo["xss"].read_text())))
    tab.goto(evil.as_uri())
    assert EVIL_HOST in tab.locator("#inventory").inner_text()
    assert tab.dialogs == []
    assert "<script>alert" not in evil.read_text()


@pytest.mark.slow
def test_bench_console_runs_small(demo: dict[str, Any], tmp_path: Path) -> None:
    """experiments/bench_console.py (the 10,000-device figures), small: it grows the report,
    serves it and times what it says it times."""
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "experiments"
                                            / "bench_console.py"), "--devices", "300",
                        "--runs", "2", "--report", str(demo["report"]), "--output", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["devices"] == 300 and res["alerts"] > len(demo["rep"].alerts)
    assert set(res["served"]) == {"first_page", "by_alerts", "category", "ping"}
    assert all(v["p50_ms"] > 0 for v in res["served"].values())
    if CHROMIUM.exists():
        assert res["rendered"]["rows"] == 50


def test_alerts_carry_the_flows_behind_them(demo: dict[str, Any]) -> None:
    """Each alert lists its device's flows in its window, those that show what deviated
    first: the port scan's alert shows the scanned ports, not the camera's heavy video
    uploads."""
    rep = demo["rep"]
    ips = {d["device_id"]: set(d["ips"]) for d in rep.devices.iter_rows(named=True)}
    with_flows = [a for a in rep.alerts if a.get("flows")]
    assert len(with_flows) == len(rep.alerts)  # every alert of the demo has a window
    for a in with_flows:
        assert 1 <= len(a["flows"]) <= 10
        for f in a["flows"]:
            assert {f["src_ip"], f["dst_ip"]} & ips[a["device_id"]], (a["message"], f)
            assert a["start"] <= f["first_seen"] < a["end"]
    scan = demo["attacks"][0]
    assert scan[1] == "port_scan"
    [first] = [a for a in rep.alerts if a["kind"] == "anomalous_window"
               and a["device_id"] == scan[3] and scan[6] <= a["start"] < scan[7]][:1]
    ports = {f["dst_port"] for f in first["flows"]}
    assert len(ports) >= 5 and all(f["src_ip"] == scan[4] for f in first["flows"]), ports


def test_api_models_carry_every_field_of_the_output_contract():
    """The API's response models restate the contract's dataclasses for OpenAPI: a field
    added to the contract must reach the API too (it once lost the explanations)."""
    import dataclasses

    from flockwatch.serving.console.api import AlertOut, IncidentOut, TopFeatureOut
    from flockwatch.serving.contract import Alert, Incident, TopFeature

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    assert set(TopFeatureOut.model_fields) == names(TopFeature)
    assert set(AlertOut.model_fields) == names(Alert) | {"key", "index", "expected"}
    assert set(IncidentOut.model_fields) == names(Incident) | {"open_alerts"}
