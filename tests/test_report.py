"""The report is built from metrics files only: columns, seed summaries, tables, figures, README."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from usdh.experiment import ExperimentPaths, evaluate_method
from usdh.io import save_npy
from usdh.report import build_report, collect_results, summarise


def _fake_run(root, method, bits, seed, rng, labels, split):
    """Codes that carry some label information, evaluated by the real evaluate stage."""
    paths = ExperimentPaths("cifar10", method, bits, seed, root=root)
    centers = rng.integers(0, 2, (10, bits)).astype(bool)
    for part in ("query", "database"):
        lab = labels[split[part]]
        bits_ = centers[lab] ^ (rng.random((len(lab), bits)) < 0.3)
        save_npy(paths.codes_dir / f"{part}.npy", np.packbits(bits_, axis=1))
    record = {
        "dataset": "cifar10",
        "protocol": "deepbit",
        "backbone": "efficientnet_lite0",
        "method": method,
        "bits": bits,
        "seed": seed,
        "source": "CIFAR-10 (JPEG copy)",
    }
    evaluate_method(labels, split, paths, topk=50, ns=[10, 50], radius=2, record=record)


@pytest.fixture
def metrics_tree(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    split = {"query": np.arange(40), "database": np.arange(40, 400)}
    for method in ("itq", "lsh"):
        for bits in (16, 32):
            for seed in (0, 1):
                _fake_run(tmp_path, method, bits, seed, rng, labels, split)
    return tmp_path


def test_results_table_and_summary(metrics_tree):
    df = collect_results(metrics_tree / "metrics")
    assert len(df) == 8
    for col in ("dataset", "protocol", "method", "bits", "seed", "mAP", "mAP_tie_aware"):
        assert col in df.columns
    assert df["method"].tolist()[:4] == ["lsh"] * 4  # the reports' method order, not alphabetical
    s = summarise(df)
    row = s[(s["method"] == "itq") & (s["bits"] == 16)].iloc[0]
    vals = df[(df["method"] == "itq") & (df["bits"] == 16)]["mAP"]
    assert row["mean"] == pytest.approx(vals.mean()) and row["std"] == pytest.approx(vals.std())


def test_build_report_writes_everything(metrics_tree):
    out = metrics_tree / "reports"
    context = {
        "backbone": "efficientnet_lite0",
        "input_size": 160,
        "weights": "imagenet",
        "versions": "test",
        "device": "cpu",
    }
    summary = build_report(metrics_tree / "metrics", out, context)
    assert summary["rows"] == 8
    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) == {"itq", "lsh"}
    main = (out / "tables" / "main_map.md").read_text()
    assert "±" in main and "16 bits" in main
    assert (out / "tables" / "main_map.tex").read_text().startswith("\\begin{tabular}")
    assert (out / "figures" / "map_vs_bits_cifar10_deepbit.png").stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert "USDH's own numbers are not available" in readme
    assert "12.55" in readme  # DeepBit's listed LSH figure at 16 bits


def test_no_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="run the evaluate stages"):
        collect_results(tmp_path)
