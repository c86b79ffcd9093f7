"""Risk findings over every shared capture: how many each rule raises, per dataset.

Each capture is one site: its flows are read (through the flow cache of FLOCKWATCH_HOME) and
the rules of ``features.findings`` run over them without a model (industrial writes against
the fallback master). The IoT Sentinel and long-term captures are smart-home devices filtered
to one device and its gateway: none speaks an industrial protocol, none is reachable from the
internet through the lab's NAT, so a finding of those rules there is a false finding; a payload
rule's finding there (old TLS, a self-signed certificate) is listed with its message to be
checked by hand. docs/findings.md gives the figures.

Usage:
    .venv/bin/python experiments/findings_audit.py                      # every dataset
    .venv/bin/python experiments/findings_audit.py --datasets iot-sentinel modbus-scada
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

from flockwatch.datasets.labelled import cached_flows
from flockwatch.features.findings import KINDS, findings
from flockwatch.features.flows import expand_sources

DATASETS = ("iot-sentinel", "long-term-iot", "modbus-scada", "ics-protocols",
            "protocol-samples", "zeek-logs")
#: Datasets of smart-home devices behind a lab NAT: industrial and exposure rules must be
#: silent there.
IOT = ("iot-sentinel", "long-term-iot")
NEVER_IN_IOT = ("remote_access_exposed", "industrial_write", "industrial_remote")


def audit(data: Path, datasets: list[str]) -> dict[str, Any]:
    per: dict[str, Any] = {}
    listed: list[dict[str, Any]] = []
    for name in datasets:
        files, problems = expand_sources([data / name])
        counts: Counter[str] = Counter()
        firing: Counter[str] = Counter()
        unreadable = len(problems)
        t0 = time.perf_counter()
        for f in files:
            flows, probs = cached_flows(Path(f))
            if any(p.severity == "error" for p in probs):
                unreadable += 1
                continue
            found = findings(flows)
            for r in found.iter_rows(named=True):
                counts[r["kind"]] += 1
                listed.append({"dataset": name, "capture": str(Path(f).relative_to(data)),
                               "kind": r["kind"], "severity": r["severity"],
                               "device": r["device_id"], "message": r["message"]})
            for k in set(found["kind"].to_list()):
                firing[k] += 1
        per[name] = {"captures": len(files), "unreadable": unreadable,
                     "findings": {k: counts[k] for k in KINDS},
                     "captures_with": {k: firing[k] for k in KINDS},
                     "seconds": round(time.perf_counter() - t0, 1)}
    false = {k: sum(per[d]["findings"][k] for d in IOT if d in per) for k in NEVER_IN_IOT}
    return {"datasets": per, "false_findings_iot": false,
            "false_findings_iot_total": sum(false.values()), "findings": listed}


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    args = ap.parse_args()
    results = audit(Path(args.data), args.datasets)
    metrics = {f"{d}_{k}": v for d, r in results["datasets"].items()
               for k, v in r["findings"].items()}
    metrics["false_findings_iot_total"] = results["false_findings_iot_total"]
    report("findings_audit", results, args.output, params={"datasets": ",".join(args.datasets)},
           metrics=metrics)


if __name__ == "__main__":
    main()
