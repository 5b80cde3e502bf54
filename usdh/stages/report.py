"""``python -m usdh report``: tables, figures and reports/README.md from the metrics files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.params import features_params, section
from usdh.provenance import environment
from usdh.report import build_report

log = logging.getLogger("usdh")

REPORTS = Path("reports")


def outputs(params: dict[str, Any]) -> list[Path]:
    names = (
        "results.csv",
        "ablations.csv",
        "classification.csv",
        "calibration.csv",
        "tables",
        "figures",
    )
    return [REPORTS / n for n in (*names, "README.md")]


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
        "device": f"{fp['device']} on {env['machine']} with {env['cpu_count']} CPUs",
    }
    exp = section(params, "experiment")
    context["protocol"] = exp["protocol"]
    provenance = layout.features_dir(exp["dataset"], fp["backbone"]) / "provenance.json"
    if provenance.is_file():
        context["backbone_images_per_s"] = json.loads(provenance.read_text()).get("images_per_s")
    cal = params.get("calibration")
    if cal:
        cfp = features_params(params, "calibration")
        cal_prov = layout.features_dir(cal["dataset"], cfp["backbone"]) / "provenance.json"
        if cal_prov.is_file():
            record = json.loads(cal_prov.read_text())
            context["calibration"] = {k: record.get(k) for k in ("layer", "images_per_s")}
    context["bank_views"] = (fp.get("augmentation") or {}).get("views")
    context["ablated"] = (params.get("ablations") or {}).get("method", "usdh")
    # the method the verdict judges against every other one
    context["target"] = (params.get("diagnostics") or {}).get("method", "usdh")
    timings = REPORTS / "timings.md"
    if timings.exists():
        context["timings"] = timings.read_text().strip()
    summary = build_report(Path(), REPORTS, context)
    log.info("report: %d result rows, %d figures", summary["rows"], len(summary["figures"]))
