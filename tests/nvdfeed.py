"""NVD CVE JSON 2.0 feeds and CISA KEV catalogues that the tests (and experiments/bench_vulns.py)
write themselves, in the shape the NVD publishes (``nvdcve-2.0-YEAR.json``): nothing is
downloaded."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any


def cpe(vendor: str, product: str, version: str = "*", part: str = "a", update: str = "*"
        ) -> str:
    return f"cpe:2.3:{part}:{vendor}:{product}:{version}:{update}:*:*:*:*:*:*"


def match(criteria: str, vulnerable: bool = True, **bounds: str) -> dict[str, Any]:
    """A cpeMatch; ``bounds`` by NVD's names (versionEndExcluding=...)."""
    return {"vulnerable": vulnerable, "criteria": criteria,
            "matchCriteriaId": "00000000-0000-0000-0000-000000000000", **bounds}


def config(*nodes: list[dict[str, Any]], operator: str | None = None) -> dict[str, Any]:
    """A configuration of OR nodes (``operator="AND"`` for an application on a platform)."""
    out: dict[str, Any] = {"nodes": [{"operator": "OR", "negate": False, "cpeMatch": n}
                                     for n in nodes]}
    if operator:
        out["operator"] = operator
    return out


def metric(version: str, score: float, severity: str | None = None,
           kind: str = "Primary") -> tuple[str, dict[str, Any]]:
    key = {"3.1": "cvssMetricV31", "4.0": "cvssMetricV40", "3.0": "cvssMetricV30",
           "2.0": "cvssMetricV2"}[version]
    data: dict[str, Any] = {"version": version, "vectorString": f"CVSS:{version}/AV:N",
                            "baseScore": score}
    m: dict[str, Any] = {"source": "nvd@nist.gov", "type": kind, "cvssData": data}
    if severity:
        if version == "2.0":
            m["baseSeverity"] = severity
        else:
            data["baseSeverity"] = severity
    return key, m


def entry(cve_id: str, configurations: list[dict[str, Any]] | None = None,
          metrics: list[tuple[str, dict[str, Any]]] | None = None,
          description: str = "A test vulnerability.", status: str = "Analyzed",
          modified: str = "2024-01-02T00:00:00.000") -> dict[str, Any]:
    ms: dict[str, list[dict[str, Any]]] = {}
    for key, m in metrics or []:
        ms.setdefault(key, []).append(m)
    return {"cve": {"id": cve_id, "sourceIdentifier": "cve@mitre.org",
                    "published": "2024-01-01T00:00:00.000", "lastModified": modified,
                    "vulnStatus": status,
                    "descriptions": [{"lang": "es", "value": "Una prueba."},
                                     {"lang": "en", "value": description}],
                    "metrics": ms, "weaknesses": [], "configurations": configurations or [],
                    "references": [{"url": "https://example.org/advisory"}]}}


def feed(entries: list[Any], timestamp: str = "2024-06-01T00:00:00.000") -> dict[str, Any]:
    return {"resultsPerPage": len(entries), "startIndex": 0, "totalResults": len(entries),
            "format": "NVD_CVE", "version": "2.0", "timestamp": timestamp,
            "vulnerabilities": entries}


def write(path: Path, doc: Any, gz: bool = False) -> Path:
    text = json.dumps(doc, indent=2)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def kev(cves: list[str]) -> dict[str, Any]:
    return {"title": "CISA Catalog of Known Exploited Vulnerabilities",
            "catalogVersion": "2024.06.01", "dateReleased": "2024-06-01T12:00:00.000Z",
            "count": len(cves),
            "vulnerabilities": [{"cveID": c, "vendorProject": "Test", "product": "Test",
                                 "vulnerabilityName": f"Test {c}", "dateAdded": "2024-05-01",
                                 "shortDescription": "x", "requiredAction": "Patch.",
                                 "dueDate": "2024-05-22",
                                 "knownRansomwareCampaignUse": "Unknown", "notes": "",
                                 "cwes": []} for c in cves]}


_WORDS = ("remote attacker buffer overflow crafted request allows execute arbitrary code via "
          "the web interface firmware denial of service authentication bypass")


def synthetic_feed(n: int, seed: int = 0, products: int = 2000) -> dict[str, Any]:
    """``n`` CVEs shaped like a yearly feed's: a description of ~300 characters, two or three
    CVSS metrics, one to six cpeMatch ranges over ``products`` products, one in five an AND
    configuration with a platform."""
    rng = random.Random(seed)
    words = _WORDS.split()
    out = []
    for i in range(n):
        p = rng.randrange(products)
        vendor, product = f"vendor{p % 400}", f"product{p}"
        matches = []
        for _ in range(rng.randint(1, 6)):
            lo, hi = rng.randint(0, 5), rng.randint(6, 12)
            matches.append(match(cpe(vendor, product), versionStartIncluding=f"{lo}.0",
                                 versionEndExcluding=f"{hi}.{rng.randint(0, 9)}"))
        configs = [config(matches)]
        if rng.random() < 0.2:
            configs.append(config([match(cpe(vendor, f"{product}_firmware", part="o"))],
                                  [match(cpe(vendor, f"hw{p}", "-", part="h"), False)],
                                  operator="AND"))
        score = round(rng.uniform(1, 10), 1)
        ms = [metric("3.1", score, "HIGH"), metric("2.0", score, "HIGH"),
              metric("3.1", score, "HIGH", "Secondary")][:rng.randint(1, 3)]
        desc = " ".join(rng.choice(words) for _ in range(45))
        out.append(entry(f"CVE-2024-{i + 10000}", configs, ms, desc))
    return feed(out)
