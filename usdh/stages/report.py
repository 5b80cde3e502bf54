"""``python -m usdh report``: tables, figures and reports/README.md from the metrics files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.io import save_text
from usdh.paramcheck import check_relations as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import features_params, section
from usdh.provenance import environment
from usdh.report import build_report
from usdh.report.timings import render_timings
from usdh.timing import read_timings

log = logging.getLogger("usdh")

REPORTS = Path("reports")


def outputs(params: dict[str, Any]) -> list[Path]:
    names = (
        "results.csv",
        "ablations.csv",
        "matched.csv",
        "verdict.csv",
        "classification.csv",
        "calibration.csv",
        "tables",
        "figures",
    )
    return [REPORTS / n for n in (*names, "README.md", "timings.md")]


def run(params: dict[str, Any]) -> None:
    """Tables, figures and reports/README.md from the metrics files."""
    fp = section(params, "features")
    env = environment(fp["device"])
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    context = {
        "backbone": fp["backbone"],
        "input_size": fp["input_size"],
        "weights": fp["weights"],
        "versions": f"Python {env['python']}, {versions}",
        "device": f"{fp['device']} on {env['machine']} with {env['cpu']['cores']} CPUs",
    }
    exp = section(params, "experiment")
    context["protocol"] = exp["protocol"]
    # speeds come from the stages' timing records, never from their outputs (usdh/timing.py)
    records = read_timings()
    speeds = {r["stage"]: (r.get("features") or {}).get("images_per_s") for r in records}
    context["backbone_images_per_s"] = speeds.get(f"features@{exp['dataset']}")
    cal = params.get("calibration")
    if cal:
        cfp = features_params(params, "calibration")
        cal_prov = layout.features_dir(cal["dataset"], cfp["backbone"]) / "provenance.json"
        if cal_prov.is_file():
            record = json.loads(cal_prov.read_text())
            context["calibration"] = {
                "layer": record.get("layer"),
                "images_per_s": speeds.get("features-calibration"),
            }
    context["bank_views"] = (fp.get("augmentation") or {}).get("views")
    # the method the verdict judges against every other one
    context["target"] = (params.get("diagnostics") or {}).get("method", "usdh")
    timings = render_timings(records, exp["dataset"])
    context["timings"] = timings.strip()
    summary = build_report(Path(), REPORTS, context)
    save_text(REPORTS / "timings.md", timings)
    log.info("report: %d result rows, %d figures", summary["rows"], len(summary["figures"]))
