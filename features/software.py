"""The software and firmware each device runs, from what it says about itself in clear text.

Sources are the flow columns ``payload`` (``features.payload``: HTTP ``Server`` and
``User-Agent``, SSH, FTP and Telnet banners, the TLS version, industrial identities) and
``announcements`` (``features.announce``: DHCP vendor class, SSDP ``SERVER`` and
``USER-AGENT``). An entry belongs to the device that sent it: ``>`` entries of flows the device
initiated, ``<`` entries of flows it answered (as ``features.evidence`` reads announcements).

Each text is normalised into (role, vendor, product, version) by a small table of known
product patterns (``KNOWN``) and, failing those, generic ``Product/1.2`` tokens; a CPE 2.3
name is formed where vendor, product and version are all known (``cpe_name``). Roles: ``os``
for kernels and operating systems, ``firmware`` for device firmware and industrial
revisions, ``software`` otherwise. docs/software.md documents the table and its limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

UTC_MS = pl.Datetime("ms", "UTC")

#: Columns of ``device_software``.
SOFTWARE_SCHEMA = pl.Schema({
    "source": pl.String(), "device_id": pl.String(), "role": pl.String(),
    "vendor": pl.String(), "product": pl.String(), "version": pl.String(),
    "cpe": pl.String(), "evidence": pl.String(), "raw": pl.String(),
    "first_seen": UTC_MS, "last_seen": UTC_MS,
})

#: Entry kinds read, from ``payload`` and from ``announcements``.
PAYLOAD_KINDS = ("http_server", "http_user_agent", "ssh_banner", "ftp_banner", "telnet_banner",
                 "tls_version", "modbus_identity", "enip_identity", "bacnet_identity",
                 "s7_identity")
ANNOUNCEMENT_KINDS = ("ssdp_server", "ssdp_user_agent", "dhcp_vendor_class",
                      "dhcpv6_vendor_class")
INDUSTRIAL_KINDS = ("modbus_identity", "enip_identity", "bacnet_identity", "s7_identity")

ROLES = ("software", "firmware", "os")


@dataclass(frozen=True)
class Software:
    """One product named by a text: CPE vendor and product names (lower case, as NVD
    spells them) where known."""

    role: str
    vendor: str | None
    product: str
    version: str | None

    @property
    def cpe(self) -> str | None:
        if self.role == "firmware" and self.vendor and self.product:
            return cpe_name(self.role, _cpe_vendor(self.vendor),
                            self.product.lower().replace(" ", "_") + "_firmware",
                            self.version)
        return cpe_name(self.role, self.vendor, self.product, self.version)


@dataclass(frozen=True)
class Pattern:
    """A known product: a regular expression whose group ``v`` (if any) is the version."""

    regex: re.Pattern[str]
    vendor: str
    product: str
    role: str = "software"


def _p(expr: str, vendor: str, product: str, role: str = "software") -> Pattern:
    return Pattern(re.compile(expr, re.IGNORECASE), vendor, product, role)


_V = r"(?P<v>\d+(?:\.\d+)*(?:[a-z]+\d*)?)"

#: Known products: (pattern, CPE vendor, CPE product, role). Checked in order, each at most
#: once per text; the generic ``Product/version`` tokens then add what none of these named.
KNOWN: tuple[Pattern, ...] = (
    _p(r"OpenSSH[_-]" + _V, "openbsd", "openssh"),
    _p(r"dropbear(?:_ssh)?[_-]?" + _V, "dropbear_ssh_project", "dropbear_ssh"),
    _p(r"\blighttpd(?:/" + _V + ")?", "lighttpd", "lighttpd"),
    _p(r"\bnginx(?:/" + _V + ")?", "f5", "nginx"),
    _p(r"\bApache(?:/" + _V + r")?(?![-\w])", "apache", "http_server"),
    _p(r"\bBoa(?:/" + _V + ")?", "boa", "boa"),
    _p(r"\bGoAhead(?:-Webs|-http)?(?:/" + _V + ")?", "embedthis", "goahead"),
    _p(r"\bmini_httpd(?:/" + _V + ")?", "acme", "mini_httpd"),
    _p(r"\bmicro_httpd(?:/" + _V + ")?", "acme", "micro_httpd"),
    _p(r"\bthttpd(?:/" + _V + ")?", "acme", "thttpd"),
    _p(r"\b(?:Allegro-Software-)?RomPager(?:/" + _V + ")?", "allegrosoft", "rompager"),
    _p(r"\bvsFTPd(?: " + _V + ")?", "beasts", "vsftpd"),
    _p(r"\bProFTPD(?: " + _V + ")?", "proftpd", "proftpd"),
    _p(r"\bPure-FTPd(?: " + _V + ")?", "pureftpd", "pure-ftpd"),
    _p(r"\bBusyBox(?: v" + _V + ")?", "busybox", "busybox"),
    _p(r"\budhcp(?:c)? " + _V, "busybox", "busybox"),
    _p(r"\bLinux[/ -]" + r"(?P<v>\d+\.\d+(?:\.\d+)*)", "linux", "linux_kernel", "os"),
    _p(r"Portable SDK for UPnP devices(?:/" + _V + ")?", "libupnp_project", "libupnp"),
    _p(r"\blibupnp(?:/" + _V + ")?", "libupnp_project", "libupnp"),
    _p(r"\bMiniUPnPd(?:/" + _V + ")?", "miniupnp_project", "miniupnpd"),
    _p(r"\bMicrosoft-IIS(?:/" + _V + ")?", "microsoft", "internet_information_services"),
    _p(r"\bMicrosoft-Windows(?:-NT)?(?:/" + _V + ")?", "microsoft", "windows", "os"),
    _p(r"\bMSFT 5\.0", "microsoft", "windows", "os"),
    _p(r"\bWerkzeug(?:/" + _V + ")?", "palletsprojects", "werkzeug"),
    _p(r"\bJetty(?:\(|/)?" + _V + "?", "eclipse", "jetty"),
    _p(r"\bOpenSSL(?:/" + _V + ")?", "openssl", "openssl"),
    _p(r"\bPHP(?:/" + _V + ")?", "php", "php"),
    _p(r"\bPython(?:/" + _V + ")?", "python", "python"),
    _p(r"\bcurl/" + _V, "haxx", "curl"),
    _p(r"\bWget/" + _V, "gnu", "wget"),
    _p(r"\bAndroid[ -]?(?:dhcp-)?" + _V, "google", "android", "os"),
    _p(r"\bandroid-dhcp-" + _V, "google", "android", "os"),
    _p(r"\bdhcpcd-" + _V, "roy_marples", "dhcpcd"),
)

#: Generic tokens that name a protocol or a family, not a product.
_NOT_PRODUCTS = frozenset({
    "upnp", "dlnadoc", "mozilla", "http", "https", "soap", "applewebkit", "khtml", "gecko",
    "safari", "version", "mobile", "compatible", "u", "linux", "windows", "like", "ssh",
    "ssh-2.0", "ssh-1.99", "tls", "sslv3", "nt", "x11", "cpu", "build",
})
_TOKEN = re.compile(r"(?P<p>[A-Za-z][A-Za-z0-9_.+\-]{1,40})/v?(?P<v>\d+(?:\.\d+)*[A-Za-z0-9]*)")
_SSH_SOFTWARE = re.compile(
    r"(?P<p>[A-Za-z][A-Za-z0-9.\-]{0,40}?)(?:[_-]v?(?P<v>\d[\w.]*))?(?:\s|$)")
_CPE_SAFE = re.compile(r"[^a-z0-9._\-]")


def cpe_name(role: str, vendor: str | None, product: str | None, version: str | None
             ) -> str | None:
    """A CPE 2.3 formatted string (part ``o`` for an operating system or firmware, else
    ``a``), or None unless vendor, product and version are all known."""
    if not vendor or not product or not version:
        return None
    part = "o" if role in ("os", "firmware") else "a"
    fields = [_cpe_field(x) for x in (vendor, product, version)]
    if not all(fields):
        return None
    return f"cpe:2.3:{part}:{fields[0]}:{fields[1]}:{fields[2]}:*:*:*:*:*:*:*"


def _cpe_field(value: str) -> str:
    """Lower case, spaces as underscores, other characters outside ``[a-z0-9._-]`` escaped
    with a backslash (the formatted-string binding of CPE 2.3)."""
    v = value.strip().lower().replace(" ", "_")
    return _CPE_SAFE.sub(lambda m: "\\" + m.group(0), v)


def normalise(kind: str, raw: str) -> list[Software]:
    """The products a text names: known patterns first, then generic ``Product/version``
    tokens; an industrial identity as its fields say. Empty when nothing is named."""
    if kind in INDUSTRIAL_KINDS:
        return _industrial(raw)
    if kind == "tls_version":
        name, _, ver = raw.partition("TLS")
        if raw.startswith("SSLv"):
            return [Software("software", None, "SSL", raw[4:] or None)]
        return [Software("software", None, "TLS", ver or None)] if not name else []
    text = raw
    if kind == "ssh_banner":  # SSH-2.0-<software> <comments>
        text = raw.split("-", 2)[2] if raw.count("-") >= 2 else raw
    found: list[Software] = []
    named: set[str] = set()
    spans: list[tuple[int, int]] = []
    for pat in KNOWN:
        m = pat.regex.search(text)
        if m is None or pat.product in named:
            continue
        named.add(pat.product)
        spans.append(m.span())
        version = m.groupdict().get("v")
        found.append(Software(pat.role, pat.vendor, pat.product, version))
    for m in _TOKEN.finditer(text):
        product = m.group("p")
        if product.lower() in _NOT_PRODUCTS or any(
                a < m.end() and m.start() < b for a, b in spans) or any(
                pat.regex.match(text, m.start()) for pat in KNOWN):
            continue
        found.append(Software("software", None, product, m.group("v")))
    if kind == "ssh_banner" and not found:
        m = _SSH_SOFTWARE.match(text)
        if m:
            found.append(Software("software", None, m.group("p"), m.group("v")))
    return found


#: Industrial vendors as their identities spell them (lower case, first words) -> the vendor
#: name of their CPEs in NVD.
INDUSTRIAL_VENDORS = {
    "schneider": "schneider-electric", "telemecanique": "schneider-electric",
    "rockwell": "rockwellautomation", "allen-bradley": "rockwellautomation",
    "siemens": "siemens", "abb": "abb", "honeywell": "honeywell", "omron": "omron",
    "mitsubishi": "mitsubishielectric", "phoenix": "phoenixcontact", "wago": "wago",
    "beckhoff": "beckhoff", "moxa": "moxa", "emerson": "emerson", "yokogawa": "yokogawa",
    "ge": "ge", "general electric": "ge", "hirschmann": "belden", "johnson": "jci",
}


def _industrial(raw: str) -> list[Software]:
    """``vendor;product;version`` of an industrial identity: firmware of the device. The
    CPE (where all three are known) is ``o:<vendor>:<product>_firmware:<version>``, NVD's way
    of naming device firmware, with the vendor mapped by ``INDUSTRIAL_VENDORS``."""
    parts = (raw.split(";") + ["", "", ""])[:3]
    vendor, product, version = (p.strip() or None for p in parts)
    if not (vendor or product):
        return []
    if version and len(version) > 1 and version[0] in "vV" and version[1].isdigit():
        version = version[1:]
    return [Software("firmware", vendor, product or "", version)]


def _cpe_vendor(vendor: str) -> str:
    low = vendor.strip().lower()
    for prefix, name in INDUSTRIAL_VENDORS.items():
        if low == prefix or low.startswith((prefix + " ", prefix + "/", prefix + "-")):
            return name
    return low


def device_software(attributed: pl.DataFrame) -> pl.DataFrame:
    """Per device, the software it runs: ``SOFTWARE_SCHEMA`` rows, one per (device, product
    named, evidence kind, text), with the first and last time a flow showed it.

    ``attributed`` is ``features.attribution.attribute``'s output (flow columns plus
    ``device_id`` and ``direction``). Flows without ``payload`` or ``announcements`` columns
    (old tables, Zeek) give nothing.
    """
    if attributed.height == 0:
        return pl.DataFrame(schema=SOFTWARE_SCHEMA)
    cols = [c for c in ("payload", "announcements") if c in attributed.columns]
    if not cols:
        return pl.DataFrame(schema=SOFTWARE_SCHEMA)
    mine = pl.when(pl.col("direction") == "out").then(pl.lit(">")).otherwise(pl.lit("<"))
    source = pl.col("source") if "source" in attributed.columns else pl.lit("")
    parts = []
    for c in cols:
        parts.append(attributed.select(
            source.cast(pl.String).alias("source"), "device_id", "first_seen", "last_seen",
            mine.alias("_mine"), pl.col(c).str.split("\n").alias("_e"),
        ).filter(pl.col("_e").is_not_null()).explode("_e"))
    kinds = list(PAYLOAD_KINDS + ANNOUNCEMENT_KINDS)
    seen = (pl.concat(parts)
            .filter(pl.col("_e").str.slice(0, 1) == pl.col("_mine"))
            .with_columns(pl.col("_e").str.slice(1).str.splitn("=", 2).alias("_kv"))
            .with_columns(pl.col("_kv").struct.field("field_0").alias("evidence"),
                          pl.col("_kv").struct.field("field_1").alias("raw"))
            .filter(pl.col("evidence").is_in(kinds) & pl.col("raw").is_not_null())
            .group_by("source", "device_id", "evidence", "raw")
            .agg(pl.col("first_seen").min(), pl.col("last_seen").max()))
    rows = []
    cache: dict[tuple[str, str], list[Software]] = {}
    for r in seen.iter_rows(named=True):
        key = (r["evidence"], r["raw"])
        found = cache.get(key)
        if found is None:
            found = cache[key] = normalise(*key)
        for s in found:
            rows.append((r["source"], r["device_id"], s.role, s.vendor, s.product, s.version,
                         s.cpe, r["evidence"], r["raw"], r["first_seen"], r["last_seen"]))
    out = pl.DataFrame(rows, schema=SOFTWARE_SCHEMA, orient="row")
    return out.sort("source", "device_id", "role", "product", "evidence", "raw",
                    nulls_last=True)


__all__ = ["ANNOUNCEMENT_KINDS", "KNOWN", "PAYLOAD_KINDS", "ROLES", "SOFTWARE_SCHEMA",
           "Software", "cpe_name", "device_software", "normalise"]
