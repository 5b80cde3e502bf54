"""Turn pytest-benchmark's JSON into reports/benchmarks/README.md (a table) and a PNG figure."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from usdh.io import atomic_path

RATE_KEYS = ("queries_per_s", "images_per_s", "codes_per_s")


def _rows(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        stats = bench["stats"]
        info = bench["extra_info"]
        key = next((k for k in RATE_KEYS if k in info), None)
        shown = f"{info[key]:,} {key.replace('_per_s', '/s')}" if key else "-"
        if "peak_rss_mb" in info:  # the memory benchmark: its figure is a size, not a rate
            shown = (
                f"peak RSS {info['peak_rss_mb']} MB "
                f"(without the search: {info['peak_rss_without_search_mb']} MB)"
            )
        if "recall" in info:  # approximate search: what the speed costs in recall
            shown += f", recall@{info.get('k', '?')} {info['recall']:.3f}"
            if "build_s" in info:
                shown += f", build {info['build_s']:.1f} s"
        if "bytes_read_per_s" in info:
            shown = f"{info['bytes_read_per_s'] / 1e9:.1f} GB read/s"
        if "speedup_median" in info:  # the paired search: ours over faiss's, per pair
            shown += (
                f" (faiss {info['faiss_queries_per_s']:,}); {info['speedup_median']}x faiss per "
                f"pair, {info['speedup_min']}-{info['speedup_max']}x over {info['pairs']} pairs"
            )
        if info.get("held_share") is not None:  # the load benchmark's usdh child
            shown += f", short spins held {info['held_share']:.0%} of the time"
        if "serial_seconds" in info:  # the queue benchmark: the serial run it is compared with
            shown = f"{info['jobs']} at once; one at a time took {info['serial_seconds']} s"
        groups[bench.get("group") or "ungrouped"].append(
            {
                "name": bench["name"],
                "median_s": stats["median"],
                "rounds": stats["rounds"],
                "shown": shown,
            }
        )
    for rows in groups.values():
        rows.sort(key=lambda r: r["median_s"])
    return groups


def _machine(info: dict[str, Any]) -> str:
    cpu = info.get("cpu", {})
    return f"{cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} CPUs"


def write_benchmark_report(json_path: Path, out_dir: Path) -> None:
    """README.md (one table per benchmark group, fastest first) and benchmarks.png."""
    data = json.loads(Path(json_path).read_text())
    groups = _rows(data)
    machine = data.get("machine_info", {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `pytest --benchmark` from `benchmarks.json` (pytest-benchmark).",
        f"Machine: {_machine(machine)}, Python {machine.get('python_version')}; "
        f"run {data.get('datetime', '?')}.",
        "",
    ]
    for rerun in data.get("reruns", []):
        # a record without a machine was written when reruns were assumed to share the run's
        where = _machine(rerun.get("machine_info", machine))
        other = where != _machine(machine)
        lines += [
            f"Rerun {rerun['datetime']} on {'another machine, ' if other else 'the same machine, '}"
            f"{where}, replacing the earlier rows: "
            + ", ".join(f"`{g}`" for g in rerun["groups"])
            + (
                ". Compare those rows with each other, not with the other groups' rows."
                if other
                else "."
            ),
            "",
        ]
    for group, rows in groups.items():
        fastest = rows[0]["median_s"]
        lines += [
            f"## {group}",
            "",
            "| benchmark | median | x fastest | rate | rounds |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            rate = r["shown"]
            lines.append(
                f"| {r['name']} | {r['median_s'] * 1e3:.2f} ms | {r['median_s'] / fastest:.2f} "
                f"| {rate} | {r['rounds']} |"
            )
        lines.append("")
    lines += _roofline(data)
    lines += _exact_or_approximate(data)
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    _figure(groups, out_dir / "benchmarks.png")


def merge_rerun(base_json: Path, rerun_json: Path) -> None:
    """Put a partial rerun's groups (``pytest --benchmark benchmarks/test_bench_load.py``, say) in
    place of the same groups of the full run in ``base_json``, and record which and when, so the
    report says which rows come from which run."""
    base = json.loads(Path(base_json).read_text())
    rerun = json.loads(Path(rerun_json).read_text())
    groups = sorted({b.get("group") or "ungrouped" for b in rerun.get("benchmarks", [])})
    if not groups:
        raise ValueError(f"{rerun_json} holds no benchmarks; nothing to merge")
    kept = [b for b in base["benchmarks"] if (b.get("group") or "ungrouped") not in groups]
    base["benchmarks"] = kept + rerun["benchmarks"]
    reruns = [r for r in base.get("reruns", []) if not set(r["groups"]) <= set(groups)]
    record = {"datetime": rerun.get("datetime", "?"), "groups": groups}
    if "machine_info" in rerun:
        record["machine_info"] = rerun["machine_info"]
    base["reruns"] = [*reruns, record]
    with atomic_path(Path(base_json)) as tmp:
        tmp.write_text(json.dumps(base, indent=4))


def _roofline(data: dict[str, Any]) -> list[str]:
    """Bytes of codes each search scans per second, against the measured memory read bandwidth."""
    benches = data.get("benchmarks", [])
    bw = next(
        (
            b["extra_info"]["bytes_read_per_s"]
            for b in benches
            if "bytes_read_per_s" in b["extra_info"]
        ),
        None,
    )
    scans = [b for b in benches if "code_bytes_scanned_per_s" in b["extra_info"]]
    if not bw or not scans:
        return []
    lines = [
        "## Roofline",
        "",
        f"Memory read bandwidth measured in the same run: {bw / 1e9:.1f} GB/s. A search that scans",
        "more than that per second is reading its database from cache, not from memory (at 59,000",
        "codes the whole database fits in cache, so compute, not bandwidth, is the limit).",
        "",
        "| search | code bytes scanned per s | share of bandwidth |",
        "| --- | --- | --- |",
    ]
    for b in scans:
        rate = b["extra_info"]["code_bytes_scanned_per_s"]
        lines.append(f"| {b['name']} | {rate / 1e9:.1f} GB/s | {rate / bw:.2f} |")
    return [*lines, ""]


def _exact_or_approximate(data: dict[str, Any]) -> list[str]:
    """Per database size: exact search beside the fastest approximate setting at two recalls."""
    sizes: dict[str, dict[str, Any]] = defaultdict(lambda: {"exact": None, "approx": []})
    for b in data.get("benchmarks", []):
        group, info = b.get("group") or "", b["extra_info"]
        if not group.startswith("ann-") or "queries_per_s" not in info:
            continue
        entry = sizes[group.removeprefix("ann-top1000-")]
        if b["name"].startswith("test_exact"):
            entry["exact"] = info
        else:
            entry["approx"].append((b["name"], info))
    if not sizes:
        return []
    lines = [
        "## Exact or approximate search",
        "",
        "Each approximate index's fastest setting that reaches a recall of the exact top-1,000",
        "(tie-aware), beside exact search in the same run; build time is extra (`build_s`).",
        "Exact search is the right tool wherever no approximate setting at the recall one needs",
        "beats it.",
        "",
        "| database | exact queries/s | fastest at recall >= 0.95 | fastest at recall >= 0.99 |",
        "| --- | --- | --- | --- |",
    ]
    for size, entry in sizes.items():
        exact = entry["exact"]
        if exact is None:
            continue
        cells = []
        for floor in (0.95, 0.99):
            ok = [(i["queries_per_s"], n, i) for n, i in entry["approx"] if i["recall"] >= floor]
            if not ok:
                cells.append("none reaches it")
                continue
            qps, name, info = max(ok)
            cells.append(
                f"{name} ({qps:,} q/s, {qps / exact['queries_per_s']:.2f}x exact, "
                f"build {info.get('build_s', 0):.0f} s)"
            )
        lines.append(f"| {size} | {exact['queries_per_s']:,} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def _figure(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = sum(len(r) for r in groups.values()) + len(groups)
    fig, ax = plt.subplots(figsize=(8, 0.3 * n + 1))
    labels, values, y = [], [], 0
    ticks = []
    for group, rows in groups.items():
        for r in rows:
            labels.append(f"{group}: {r['name']}")
            values.append(r["median_s"] * 1e3)
            ticks.append(y)
            y += 1
        y += 1
    ax.barh(ticks, values)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time (ms, log scale)")
    ax.grid(axis="x", alpha=0.3)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":  # python -m benchmarks.report BASE.json RERUN.json OUT_DIR
    import sys

    if len(sys.argv) != 4:
        sys.exit("usage: python -m benchmarks.report BASE.json RERUN.json OUT_DIR")
    merge_rerun(Path(sys.argv[1]), Path(sys.argv[2]))
    write_benchmark_report(Path(sys.argv[1]), Path(sys.argv[3]))
