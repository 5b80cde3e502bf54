"""``python -m usdh report``: tables, figures and reports/README.md from the metrics files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.io import read_json
from usdh.paramcheck import check_relations as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import features_params, section, setting_key, settings_entries
from usdh.provenance import environment
from usdh.report import build_report
from usdh.report.build import OUTPUTS
from usdh.report.inputs import rerun
from usdh.report.timings import render_timings
from usdh.timing import read_timings

log = logging.getLogger("usdh")

REPORTS = Path("reports")


def outputs(params: dict[str, Any]) -> list[Path]:
    return [REPORTS / n for n in (*OUTPUTS, "timings.md")]


def configured_names(params: dict[str, Any]) -> dict[str, set[str]]:
    """Per run group, the run names params.yaml configures (methods and variants)."""
    exp = section(params, "experiment")
    cal = params.get("calibration") or {}
    return {
        "retrieval": set(exp["methods"]),
        "ablations": set((params.get("ablations") or {}).get("variants") or {}),
        "classification": set((params.get("classification") or {}).get("methods") or []),
        "finetune": set((params.get("finetune") or {}).get("methods") or []),
        "calibration": set(cal.get("methods") or []),
        "settings": set(exp["methods"]) if settings_entries(params) else set(),
    }


def check_no_stale_runs(params: dict[str, Any], root: Path = Path()) -> None:
    """Refuse metrics of runs that params.yaml no longer configures (a renamed variant, a
    dropped method): the report reads every run on disk, and would show them as current."""
    names = configured_names(params)
    for group in layout.GROUPS:
        stale = sorted({run.name for run in layout.find_runs(group, root=root)} - names[group])
        if stale:
            folder = root / layout.METRICS / group
            raise ValueError(
                f"{folder} holds runs that params.yaml does not configure: {', '.join(stale)} "
                f"(left by an earlier configuration?); remove their folders under metrics/, "
                f"models/, codes/, queries/ and plots/, and their timing records, or configure "
                f"them again"
            )
    listed = {setting_key(e) for e in settings_entries(params)}
    runs = layout.find_runs("settings", root=root)
    gone = sorted({f"{r.dataset}/{r.protocol}" for r in runs} - listed)
    if gone:
        raise ValueError(
            f"{root / layout.METRICS / 'settings'} holds runs of settings that params.yaml no "
            f"longer lists: {', '.join(gone)}; remove their folders under metrics/, models/, "
            "codes/, queries/ and plots/, or list them again under 'settings'"
        )


def run(params: dict[str, Any]) -> None:
    """Tables, figures and reports/README.md from the metrics files."""
    check_no_stale_runs(params)
    fp = features_params(params, dataset=section(params, "experiment", "dataset"))
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
            record = read_json(cal_prov, rerun("features-calibration"))
            context["calibration"] = {
                "layer": record.get("layer"),
                "images_per_s": speeds.get("features-calibration"),
            }
    context["bank_views"] = (fp.get("augmentation") or {}).get("views")
    # the method the verdict judges against every other one
    context["target"] = (params.get("diagnostics") or {}).get("method", "usdh")
    timings = render_timings(records, exp["dataset"])
    context["timings"] = timings.strip()
    # all or nothing: if any input is missing or damaged, nothing under reports/ changes
    summary = build_report(Path(), REPORTS, context, also={"timings.md": timings})
    log.info("report: %d result rows, %d figures", summary["rows"], len(summary["figures"]))
