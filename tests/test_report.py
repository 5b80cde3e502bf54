"""The report is built from metrics files only: columns, seed summaries, tables, figures, README."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usdh.evaluation import Curves, evaluate_run
from usdh.io import save_json, save_npy
from usdh.layout import Run
from usdh.report import build_report, collect_results, summarise
from usdh.report.ablations import ablation_changes
from usdh.report.calibration import (
    PUBLISHED,
    calibration_summary,
    calibration_table,
    collect_calibration,
    gap_readings,
    read_calibration,
)
from usdh.report.classification import accuracy_interval, classification_summary
from usdh.report.queries import per_class_table, per_seed
from usdh.report.selection import read_selection, selection_figure
from usdh.report.verdict import WORDS, paired_bootstrap, seed_query_interval, verdict_table

#: small curves for a 400-image toy database
CURVES = Curves(
    listed=(10, 50),
    map_listed=(100,),
    p_max=200,
    p_points=8,
    k_min=20,
    k_points=5,
    examples=3,
    top=5,
)


def _environment(vendor: str, family: str, model: str) -> dict:
    cpu = {"cpu": f"{vendor} CPU", "vendor": vendor, "family": family, "model": model}
    cpu.update(stepping="1", isa=["avx2"], cores=2, os="Linux")
    pools = [{"internal_api": "openblas", "version": "0.3.27", "num_threads": 2}]
    return {
        "python": "3.11.7",
        "cpu": cpu,
        "packages": {"numpy": "2.0"},
        "libraries": {"threadpools": pools},
    }


#: the machine each fake method's fit record names: two, so the report must say they are mixed
ENVIRONMENTS = {
    "itq": _environment("AuthenticAMD", "25", "17"),
    "lsh": _environment("GenuineIntel", "6", "143"),
    "usdh": _environment("AuthenticAMD", "25", "17"),
    "cibhash": _environment("AuthenticAMD", "25", "17"),
}


def _fake_run(root, method, bits, seed, rng, labels, split, protocol="deepbit", topk=50):
    """Codes that carry some label information, evaluated by the real evaluate stage."""
    paths = Run("retrieval", "cifar10", protocol, method, bits, seed, root)
    centers = rng.integers(0, 2, (10, bits)).astype(bool)
    for part in ("query", "database"):
        lab = labels[split[part]]
        bits_ = centers[lab] ^ (rng.random((len(lab), bits)) < 0.3)
        save_npy(paths.codes_dir / f"{part}.npy", np.packbits(bits_, axis=1))
    record = {
        "dataset": "cifar10",
        "protocol": protocol,
        "backbone": "efficientnet_lite0",
        "method": method,
        "bits": bits,
        "seed": seed,
        "source": "CIFAR-10 (JPEG copy)",
    }
    evaluate_run(labels, split, paths, topk=topk, curves=CURVES, radius=2, record=record)
    fit = {"n_train": 360, "fit_seconds": 0.5, "params": {}, "environment": ENVIRONMENTS[method]}
    fit["encode"] = {"database_codes_per_s": 2e5, "model_bytes": 3000 * bits}
    save_json(paths.fit_record, fit)


@pytest.fixture
def metrics_tree(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    split = {"query": np.arange(40), "database": np.arange(40, 400)}
    for method in ("itq", "lsh"):
        for bits in (16, 32):
            for seed in (0, 1):
                _fake_run(tmp_path, method, bits, seed, rng, labels, split)
                # a second protocol, ranked over the whole database
                _fake_run(tmp_path, method, bits, seed, rng, labels, split, "1k-5k-59k", None)
    return tmp_path


def test_results_table_and_summary(metrics_tree):
    df = collect_results(metrics_tree)
    assert len(df) == 16
    assert set(df["protocol"]) == {"deepbit", "1k-5k-59k"}
    # every protocol reports mAP@k at the listed k, whatever its own cut-off
    assert df["mAP@100"].notna().all() and df["mAP@100_tie_aware"].notna().all()
    assert (df["codes_per_s"] == 2e5).all() and (df["model_bytes"] == 3000 * df["bits"]).all()
    df = df[df["protocol"] == "deepbit"]
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
    summary = build_report(metrics_tree, out, {**context, "protocol": "deepbit"})
    assert summary["rows"] == 16
    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) == {"itq", "lsh"}
    main = (out / "tables" / "main_map.md").read_text()
    assert "±" in main and "16 bits" in main
    assert (out / "tables" / "main_map.tex").read_text().startswith("\\begin{tabular}")
    assert (out / "figures" / "map_vs_bits_cifar10_deepbit.png").stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert "USDH's own numbers are not available" in readme
    assert "12.55" in readme  # DeepBit's listed LSH figure at 16 bits
    # the reader's order: verdict (no usdh here, so none), setup, main tables, cost, lookup,
    # figures, reported vs reproduced
    order = [
        "## Setup",
        "## mAP@100 (%)",
        "## mAP over the whole database",
        "## What each method trained on, and what it costs",
        "## Hash lookup within Hamming radius 2",
        "## Figures",
        "## Reported vs reproduced",
    ]
    assert [readme.index(h) for h in order] == sorted(readme.index(h) for h in order)
    for stem in ("precision_at_n", "map_at_k", "pr", "hash_lookup", "map_vs_bits"):
        for protocol in ("deepbit", "1k-5k-59k"):
            name = f"{stem}_cifar10_{protocol}.png"
            assert (out / "figures" / name).stat().st_size > 1000
            assert f"figures/{name}" in readme
    assert (out / "figures" / "per_class_cifar10_deepbit_32bits.png").is_file()
    cost = (out / "tables" / "training.md").read_text()
    assert "200k / 200k" in cost and "47 KiB / 94 KiB" in cost
    lookup = pd.read_csv(out / "results.csv")
    found = lookup["precision_r2_nonempty"].notna()  # NaN: every lookup of the run was empty
    assert found.any() and (lookup.loc[~found, "empty_r2"] == 1).all()
    assert (lookup["precision_r2_nonempty"][found] >= lookup["precision_r2"][found] - 1e-12).all()
    # every row names its machine, and the report says that these results mix two
    itq = results[results["method"] == "itq"]
    assert set(itq["cpu_id"]) == {"AuthenticAMD family 25 model 17"}
    assert set(itq["math_libraries"]) == {"openblas 0.3.27 (2 threads)"}
    assert "these results mix 2 machines" in readme and "GenuineIntel family 6 model 143" in readme
    # every seed as a dot, shown under the verdict's figures
    assert (out / "figures" / "seeds_cifar10_deepbit.png").stat().st_size > 1000


def test_per_class_ap_and_verdict_per_protocol(metrics_tree):
    df = collect_results(metrics_tree)
    part = df[df["protocol"] == "deepbit"]
    table = per_class_table(metrics_tree, part, [f"c{i}" for i in range(10)], 32)
    # direct: each query's tie-aware AP, averaged over seeds, then over the class's queries
    for method in ("itq", "lsh"):
        runs = [Run("retrieval", "cifar10", "deepbit", method, 32, s, metrics_tree) for s in (0, 1)]
        aps = np.mean([np.load(r.per_query)["ap_tie_aware"] for r in runs], axis=0)
        labels = np.load(runs[0].per_query)["label"]
        for c in np.unique(labels):
            assert table.loc[method, f"c{c}"] == pytest.approx(aps[labels == c].mean() * 100)
    df = df.assign(method=df["method"].replace({"itq": "usdh"}))  # judge "usdh" against lsh
    for r in df[df["method"] == "usdh"].itertuples():  # the files follow the renamed method
        old = Run("retrieval", r.dataset, r.protocol, "itq", r.bits, r.seed, metrics_tree)
        new = Run("retrieval", r.dataset, r.protocol, "usdh", r.bits, r.seed, metrics_tree)
        new.per_query.parent.mkdir(parents=True, exist_ok=True)
        new.per_query.write_bytes(old.per_query.read_bytes())
    v = verdict_table(metrics_tree, df, "usdh")
    assert set(v["protocol"]) == {"deepbit", "1k-5k-59k"}
    # a protocol ranked over the whole database has its mAP once, not as a "cut-off" too
    whole = v[v["protocol"] == "1k-5k-59k"]
    assert "mAP at the cut-off (tie-aware)" not in set(whole["metric"])
    assert "mAP at the cut-off (tie-aware)" in set(v[v["protocol"] == "deepbit"]["metric"])
    # the words come from the interval over seeds and queries; the queries-only one stays beside
    assert {w.split(" ", 1)[1] for w in v["verdict"]} <= set(WORDS)
    assert {w.split(" ", 1)[1] for w in v["these models only"]} <= set(WORDS)
    assert set(v["seeds"]) == {"2 / 2"}
    row = v[v["metric"] == "mAP over the database (tie-aware)"].iloc[0]
    sel = df[(df["protocol"] == row["protocol"]) & (df["bits"] == row["bits"])]
    a = per_seed(metrics_tree, sel, "usdh", int(row["bits"]))["ap_all_tie_aware"] * 100
    b = per_seed(metrics_tree, sel, row["vs"], int(row["bits"]))["ap_all_tie_aware"] * 100
    assert a.shape[0] == 2 and a.shape == b.shape
    diff, lo, hi = seed_query_interval(a, b)
    want = f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    assert row["difference [95% CI, seeds and queries]"] == want


def test_no_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="run the evaluate stages"):
        collect_results(tmp_path)


def test_ablations_and_classification_in_the_report(tmp_path):
    import json

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 300)
    split = {"query": np.arange(30), "database": np.arange(30, 300)}
    variants = {  # variant: (its method, the split part it trained on)
        "no_rotation": ("usdh", None),
        "semantic_only": ("usdh", None),
        "itq_matched": ("itq", "augmentation_subset"),
    }
    for seed in (0, 1):
        for method in ("usdh", "itq", "cibhash"):
            _fake_run(tmp_path, method, 16, seed, rng, labels, split)
        for variant, (method, part) in variants.items():
            paths = Run("ablations", "cifar10", "deepbit", variant, 16, seed, tmp_path)
            for part_ in ("query", "database"):
                n = len(split[part_])
                save_npy(paths.codes_dir / f"{part_}.npy", rng.integers(0, 256, (n, 2), np.uint8))
            record = {"dataset": "cifar10", "method": method, "variant": variant, "bits": 16}
            record.update(seed=seed, **({"train_on": part} if part else {}))
            evaluate_run(labels, split, paths, topk=50, curves=CURVES, radius=2, record=record)
    cls_root = tmp_path / "metrics" / "classification" / "oxford17" / "classification"
    for seed, acc in ((0, 0.5), (1, 0.7)):
        path = cls_root / "itq" / "32" / f"{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "dataset": "oxford17",
                    "method": "itq",
                    "bits": 32,
                    "seed": seed,
                    "accuracy": acc,
                    "C": 1.0,
                }
            )
        )
    (cls_root / "features.json").write_text(
        json.dumps({"dataset": "oxford17", "method": "features", "dim": 1280, "accuracy": 0.9})
    )
    out = tmp_path / "reports"
    build_report(tmp_path, out, {"backbone": "b", "input_size": 32})
    abl = pd.read_csv(out / "ablations.csv")
    assert sorted(set(abl["variant"])) == ["full", "itq_matched", "no_rotation", "semantic_only"]
    results = pd.read_csv(out / "results.csv")
    for method in ("usdh", "itq"):  # each method's full run = its main experiment's runs
        full = abl[(abl["variant"] == "full") & (abl["method"] == method)]
        main = results[results["method"] == method].sort_values("seed")["mAP"].to_numpy()
        assert np.array_equal(full.sort_values("seed")["mAP"].to_numpy(), main)
    assert set(abl[abl["variant"] == "itq_matched"]["method"]) == {"itq"}
    table = (out / "tables" / "ablations.md").read_text()
    assert "semantic_only" in table and "(-" in table  # random codes lose to the full objective
    # the change from full comes with its interval over seeds and queries (two seeds here)
    changes = ablation_changes(tmp_path)
    assert set(changes["variant"]) == {"itq_matched", "no_rotation", "semantic_only"}
    assert dict(zip(changes["variant"], changes["method"], strict=True))["itq_matched"] == "itq"
    # the matched-data verdict: ITQ trained on CIBHash's images, minus CIBHash, from the
    # per-query APs directly (the grand mean over seeds and queries)
    matched = pd.read_csv(out / "matched.csv")
    assert list(matched["method"]) == ["itq"] and list(matched["bits"]) == [16]

    def ap(group: str, name: str) -> np.ndarray:
        runs = [Run(group, "cifar10", "deepbit", name, 16, s, tmp_path) for s in (0, 1)]
        return np.stack([np.load(r.per_query)["ap_tie_aware"] for r in runs]) * 100

    m = matched.iloc[0]
    cib = ap("retrieval", "cibhash")
    assert m["matched_change"] == pytest.approx((ap("ablations", "itq_matched") - cib).mean())
    assert m["full_change"] == pytest.approx((ap("retrieval", "itq") - cib).mean())
    assert m["matched_lo"] < m["matched_change"] < m["matched_hi"]
    readme = (out / "README.md").read_text()
    assert "## Matched data" in readme and "cibhash (trains on 5,000 images" in readme
    assert (changes["lo"] <= changes["change"]).all() and (changes["change"] <= changes["hi"]).all()
    c = changes.iloc[0]
    assert f"({c['change']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}])" in table
    # an ablation run scored but without its per-query file is named, never left out of the
    # table in silence
    missing = Run("ablations", "cifar10", "deepbit", "no_rotation", 16, 1, tmp_path).per_query
    kept = missing.read_bytes()
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing}.*ablate@no_rotation"):
        ablation_changes(tmp_path)
    missing.write_bytes(kept)
    cls = (out / "tables" / "classification.md").read_text()
    assert "60.00 ± 14.14" in cls and "features (1280-d, real-valued)" in cls and "90.00" in cls
    assert (out / "figures" / "ablations_cifar10.png").stat().st_size > 1000


def test_paired_bootstrap_matches_a_direct_resampling_of_queries():
    rng = np.random.default_rng(0)
    diff = rng.normal(0.5, 2.0, 400)
    mean, lo, hi = paired_bootstrap(diff, seed=1, n_resamples=4000)
    direct = np.random.default_rng(2)
    means = np.array([diff[direct.integers(0, 400, 400)].mean() for _ in range(4000)])
    d_lo, d_hi = np.percentile(means, [2.5, 97.5])
    assert mean == pytest.approx(diff.mean())
    assert lo == pytest.approx(d_lo, abs=0.03) and hi == pytest.approx(d_hi, abs=0.03)
    assert paired_bootstrap(diff, seed=1, n_resamples=4000) == (mean, lo, hi)  # seeded
    assert paired_bootstrap(np.full(10, 0.3)) == pytest.approx((0.3, 0.3, 0.3))


# -- the calibration against published numbers --------------------------------------------------
def _calibration_tree(root, values):
    """Calibration metrics with chosen scores: ``values[(name, protocol)] = (mAP, mAP_all)`` in
    %, the same for every code length, seeds 0 and 1 at +/- 0.1 around it."""
    for (name, protocol), (cut, whole) in values.items():
        for bits in (16, 32, 64):
            for seed, shift in ((0, -0.1), (1, 0.1)):
                run = Run("calibration", "cifar10", protocol, name, bits, seed, root)
                m = {
                    "dataset": "cifar10",
                    "protocol": protocol,
                    "method": name.split("_")[0],
                    "bits": bits,
                    "seed": seed,
                    "topk": 1000,
                    "mAP": (cut + shift) / 100,
                    "mAP_tie_aware": (cut + shift) / 100,
                    "mAP_all": (whole + shift) / 100,
                    "mAP_all_tie_aware": (whole + shift) / 100,
                }
                save_json(run.metrics, m)
                save_json(run.fit_record, {"n_train": 5000 if protocol == "1k-5k-59k" else 50000})


def test_calibration_compares_each_published_cell_as_stated_and_explains_gaps(tmp_path):
    # ITQ: 25 at the cut-off, 16.5 over the whole database on both protocols
    _calibration_tree(
        tmp_path,
        {("itq", "deepbit"): (25.0, 16.5), ("itq", "1k-5k-59k"): (16.2, 16.2)},
    )
    df = collect_calibration(tmp_path)
    assert len(df) == 12 and set(df["name"]) == {"itq"}
    # the same walk over the runs reads their fit records' training-set sizes
    again, train = read_calibration(tmp_path)
    assert again.equals(df) and train == {"1k-5k-59k": [5000], "deepbit": [50000]}
    table = calibration_table(df)
    deepbit = table[(table["row"] == "PCA-ITQ")].iloc[0]
    # published 15.67 at 16 bits; ours 25.00 +/- sample std of (24.9, 25.1)
    assert deepbit["16 bits"] == "15.67 / 25.00 ± 0.14 (+9.33)"
    treezzz = table[(table["row"] == "ITQ")].iloc[0]
    assert treezzz["metric"] == "mAP@all" and treezzz["16 bits"] == "16.03 / 16.20 ± 0.14 (+0.17)"
    # rows of methods without runs are left out
    assert set(table["row"]) == {"PCA-ITQ", "ITQ"}
    gaps = gap_readings(df)
    itq = gaps[gaps["row"].str.startswith("PCA-ITQ")]
    assert list(itq["reading"]) == [
        "as stated",
        "mAP over the whole database, same split",
        "mAP over the whole database, `1k-5k-59k`",
    ]
    assert list(itq["within 1 point"]) == ["0 of 3", "3 of 3", "3 of 3"]
    assert not gaps["row"].str.startswith("ITQ").any()  # within 1 point as stated: no gap row
    counts = calibration_summary(df)
    itq_cells = 3 * sum(1 for p in PUBLISHED if p.method == "itq")
    assert set(counts["sources"]) == {"DeepBit README", "github.com/TreezzZ/ITQ_PyTorch"}
    assert counts["cells"] == itq_cells == 6
    assert counts["as_stated"] == 3 and counts["whole_database"] == 6
    assert counts["sources"]["DeepBit README"]["diff_stated"] == pytest.approx(
        25.0 - (15.67 + 16.20 + 16.64) / 3
    )


def test_calibration_lsh_between_centred_and_uncentred(tmp_path):
    # the re-implementation's LSH row: 11.91 / 12.88 / 14.36; ours 14 centred, 11 uncentred
    _calibration_tree(
        tmp_path,
        {("lsh", "1k-5k-59k"): (14.0, 14.0), ("lsh_uncentred", "1k-5k-59k"): (11.0, 11.0)},
    )
    df = collect_calibration(tmp_path)
    counts = calibration_summary(df)
    assert counts["lsh_between"] == (2, 3)  # 14.36 is above both
    gaps = gap_readings(df)
    lsh = gaps[gaps["row"] == "LSH (`1k-5k-59k`, mAP@all)"]
    assert "LSH without centring, as stated" in set(lsh["reading"])


def _bench(name: str, group: str, median: float) -> dict:
    return {
        "name": name,
        "group": group,
        "stats": {"median": median, "rounds": 1},
        "extra_info": {},
    }


def test_a_partial_benchmark_rerun_replaces_its_groups_and_says_so(tmp_path: Path) -> None:
    from benchmarks.report import merge_rerun, write_benchmark_report

    base, rerun = tmp_path / "base.json", tmp_path / "rerun.json"
    base.write_text(
        json.dumps(
            {
                "datetime": "2026-11-30T10:00",
                "benchmarks": [
                    _bench("a1", "A", 1.0),
                    _bench("b1", "B", 2.0),
                    _bench("b2", "B", 3),
                ],
            }
        )
    )
    rerun.write_text(
        json.dumps({"datetime": "2026-11-30T15:00", "benchmarks": [_bench("b3", "B", 4)]})
    )
    merge_rerun(base, rerun)
    merge_rerun(base, rerun)  # again: one record of the rerun, not two
    merged = json.loads(base.read_text())
    assert [b["name"] for b in merged["benchmarks"]] == ["a1", "b3"]
    assert merged["reruns"] == [{"datetime": "2026-11-30T15:00", "groups": ["B"]}]
    write_benchmark_report(base, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert (
        "Rerun 2026-11-30T15:00 on the same machine, ?, ? CPUs, replacing the earlier rows: `B`."
        in readme
    )
    assert "| b3 |" in readme and "| b1 |" not in readme
    # a rerun on another processor says so: its rows compare with each other only
    amd = {"cpu": {"brand_raw": "AMD EPYC", "count": 2}}
    rerun.write_text(
        json.dumps(
            {
                "datetime": "2026-11-30T18:00",
                "machine_info": amd,
                "benchmarks": [_bench("b4", "B", 5)],
            }
        )
    )
    merge_rerun(base, rerun)
    write_benchmark_report(base, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert (
        "Rerun 2026-11-30T18:00 on another machine, AMD EPYC, 2 CPUs, replacing the earlier rows: "
        "`B`. Compare those rows with each other, not with the other groups' rows." in readme
    )
    assert "2026-11-30T15:00" not in readme  # the B rows of that rerun are gone
    rerun.write_text(json.dumps({"datetime": "x", "benchmarks": []}))
    with pytest.raises(ValueError, match="no benchmarks"):
        merge_rerun(base, rerun)


def test_accuracy_interval_and_the_ranks_it_resolves():
    a = pd.Series([0.80, 0.82, 0.81])
    b = pd.Series([0.60, 0.61, 0.62])
    diff, lo, hi = accuracy_interval(a, b, 340)
    # direct: seed terms s^2/n, binomial terms p(1-p)/N, Welch-Satterthwaite
    terms = [(a.var() / 3, 2), (b.var() / 3, 2), ((0.81 * 0.19 + 0.61 * 0.39) / 340, 339)]
    var = sum(v for v, _ in terms)
    dof = var**2 / sum(v**2 / d for v, d in terms)
    from scipy import stats

    half = stats.t.ppf(0.975, dof) * var**0.5
    assert (diff, lo, hi) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    rows = [
        {"dataset": "oxford17", "method": m, "bits": 16, "seed": s, "accuracy": v, "n_test": 340}
        for m, values in (("usdh", a), ("itq", b), ("lsh", a + 0.005))
        for s, v in enumerate(values)
    ]
    summary = classification_summary(pd.DataFrame(rows), {}, "usdh")
    assert "oxford17 at 16 bits (340 test images)" in summary
    assert "resolved above itq" in summary and "not resolved against lsh" in summary
    assert "ranks" not in summary


def test_selection_records_make_the_sensitivity_figure(tmp_path):
    folder = tmp_path / "reports" / "validation" / "cifar10" / "deepbit" / "usdh"
    folder.mkdir(parents=True)
    settings = [
        ({"lr": 0.01, "hidden": None}, (0.50, 0.52)),
        ({"lr": 0.003, "hidden": None}, (0.55, 0.56)),
        ({"lr": 0.003, "hidden": 512}, (0.53, 0.54)),
        ({"lr": 0.1, "hidden": None}, (None, None)),  # diverged
    ]
    for number, (setting, scores) in enumerate(settings):
        for seed, score in enumerate(scores):
            record = {"method": "usdh", "bits": 32, "seed": seed, "setting": setting}
            record["val_mAP"] = score
            save_json(folder / f"{number}_{seed}.json", record)
    runs = read_selection(tmp_path, "cifar10", "deepbit")
    assert len(runs) == 8 and runs["val_mAP"].isna().sum() == 2
    assert set(runs["knob:lr"]) == {"0.01", "0.003", "0.1"}
    path = selection_figure(runs, tmp_path / "selection.png")
    assert path is not None and path.stat().st_size > 1000
    assert selection_figure(runs.iloc[0:0], tmp_path / "none.png") is None


def test_machine_columns_do_not_depend_on_the_order_libraries_were_loaded():
    """Two OpenBLAS copies (numpy's, scipy's) are listed in the order the process loaded them:
    the same machine and software must give the same row either way (a clean-clone CI run once
    failed on exactly this)."""
    from usdh.provenance import machine_columns

    pools = [
        {"internal_api": "openblas", "version": "0.3.30", "num_threads": 2},
        {"internal_api": "openblas", "version": "0.3.31.188.0", "num_threads": 2},
    ]
    env = {"libraries": {"threadpools": pools, "torch": {"cpu_capability": "AVX2", "threads": 2}}}
    flipped = {"libraries": {**env["libraries"], "threadpools": pools[::-1]}}
    a, b = machine_columns(env), machine_columns(flipped)
    assert a == b
    assert a["math_libraries"] == (
        "openblas 0.3.30 (2 threads); openblas 0.3.31.188.0 (2 threads); "
        "torch kernels AVX2 (2 threads)"
    )


def test_low_seeds_counts_the_seeds_far_below_their_methods_median():
    from usdh.report.modes import LOW_GAP, low_seeds, low_seeds_section

    rng = np.random.default_rng(3)
    rows = []
    values = {  # method -> bits -> per-seed mAP (fractions)
        "bihalf": {
            32: [0.604, 0.587, 0.533, 0.599, 0.541],
            16: [0.555, 0.573, 0.526, 0.581, 0.529],
        },
        "itq": {32: [0.524, 0.525, 0.527, 0.522, 0.526], 16: [0.46, 0.461, 0.459, 0.458, 0.46]},
        "pcah": {32: [0.43], 16: [0.40]},
    }
    for method, by_bits in values.items():
        for bits, seeds in by_bits.items():
            for seed, v in enumerate(seeds):
                rows.append(
                    {"dataset": "cifar10", "protocol": "deepbit", "method": method, "bits": bits}
                    | {"seed": seed, "mAP_tie_aware": v, "noise": rng.random()}
                )
    table = low_seeds(pd.DataFrame(rows), "mAP_tie_aware")
    # brute force: a seed is low when below its group's median by more than LOW_GAP points
    for r in table.itertuples():
        seeds = np.array(values[r.method][r.bits]) * 100
        assert r.low == int((seeds < np.median(seeds) - LOW_GAP).sum())
    assert "pcah" not in set(table["method"])  # run once: nothing to compare with
    got = table.set_index(["method", "bits"])["which"]
    assert got[("bihalf", 32)] == "seed 2 (53.3), seed 4 (54.1)"
    assert got[("itq", 32)] == ""
    text = "\n".join(low_seeds_section(table, "deepbit", "mAP@1000 (tie-aware)"))
    assert "| bihalf   | 4 of 10" in text and "2 of 5: seed 2 (53.3), seed 4 (54.1)" in text


def test_hardware_section_lists_each_recorded_comparison():
    from usdh.report.hardware import hardware_section, hardware_table

    rows = []
    for a, b, cells, verdict in (
        ("r1", "r2", {"cibhash": -2.42, "itq": 0.0}, None),
        ("r3", "r4", {"cibhash": -1.85, "itq": 0.31, "usdh": 0.04}, 2),
    ):
        for method, v in cells.items():
            rows.append(
                {"a": a, "b": b, "a_machine": f"m-{a}", "b_machine": f"m-{b}", "features": "f"}
                | {"method": method, "largest": v, "where": f"w-{method}", "runs": 3}
                | {"verdict_cells_changed": verdict}
            )
    df = pd.DataFrame(rows)
    table = hardware_table(df)
    assert list(table["method"]) == ["cibhash", "itq", "usdh"]  # largest change first
    first, second = (c for c in table.columns if c != "method")
    assert first.startswith("r1 → r2 (m-r1 → m-r2") and second.startswith("r3 → r4")
    assert table.loc[0, first] == "-2.42 (w-cibhash)" and table.loc[2, first] == "-"
    results = pd.DataFrame({"cpu_id": ["GenuineIntel family 6 model 167"] * 2})
    text = "\n".join(hardware_section(df, results, pd.DataFrame({"cpu_id": ["x"]})))
    assert "r1 → r2: verdict cells that changed word or sign: not recorded" in text
    assert "r3 → r4: verdict cells that changed word or sign: 2" in text
    assert "1 CPU model(s) (GenuineIntel family 6 model 167)" in text and "1 row(s)" in text


def test_the_report_refuses_runs_that_params_no_longer_configure(tmp_path):
    """A renamed ablation variant leaves its old metrics behind; the report read them as a
    current variant once (semantic_weight_3, 2026-12-04). Now it names them and stops."""
    from usdh.stages.report import check_no_stale_runs

    params = {
        "experiment": {"methods": ["itq"]},
        "ablations": {"variants": {"semantic_weight_10": {"method": "usdh"}}},
    }
    for name in ("semantic_weight_10", "semantic_weight_3"):
        save_json(tmp_path / f"metrics/ablations/cifar10/deepbit/{name}/32/0.json", {})
    save_json(tmp_path / "metrics/retrieval/cifar10/deepbit/itq/32/0.json", {})
    with pytest.raises(ValueError, match=r"does not configure: semantic_weight_3 \("):
        check_no_stale_runs(params, tmp_path)
    params["ablations"]["variants"]["semantic_weight_3"] = {"method": "usdh"}
    check_no_stale_runs(params, tmp_path)  # configured again: nothing stale
    save_json(tmp_path / "metrics/retrieval/cifar10/deepbit/lsh/32/0.json", {})
    with pytest.raises(ValueError, match="does not configure: lsh"):
        check_no_stale_runs(params, tmp_path)
    (tmp_path / "metrics/retrieval/cifar10/deepbit/lsh/32/0.json").unlink()
    # a setting that is no longer listed, and a method the settings no longer run
    save_json(tmp_path / "metrics/settings/fashion_mnist/1k-69k/itq/32/0.json", {})
    with pytest.raises(ValueError, match="does not configure: itq"):
        check_no_stale_runs(params, tmp_path)
    params["settings"] = [{"dataset": "cifar10", "protocol": "deepbit", "backbone": "gist"}]
    with pytest.raises(ValueError, match="no longer lists: fashion_mnist/1k-69k; remove"):
        check_no_stale_runs(params, tmp_path)
    params["settings"].append({"dataset": "fashion_mnist", "protocol": "1k-69k", "backbone": "b"})
    check_no_stale_runs(params, tmp_path)


# -- damaged inputs: one clear error, and nothing under reports/ changes -------------------------
CONTEXT = {"backbone": "b", "input_size": 32, "protocol": "deepbit"}


@pytest.fixture
def small_project(tmp_path):
    """Two methods, two seeds, one code length; a built report beside the committed inputs the
    report reads from reports/ (the selection records, hardware.csv, machines.csv)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 200)
    split = {"query": np.arange(20), "database": np.arange(20, 200)}
    for method in ("itq", "lsh"):
        for seed in (0, 1):
            _fake_run(tmp_path, method, 16, seed, rng, labels, split)
    reports = tmp_path / "reports"
    record = {"method": "usdh", "bits": 16, "seed": 0, "setting": {"lr": 0.1}, "val_mAP": 0.3}
    save_json(reports / "validation" / "cifar10" / "deepbit" / "usdh" / "0_0.json", record)
    row = {"a": "r1", "b": "r2", "a_machine": "m1", "b_machine": "m2", "features": "f"}
    row |= {"method": "itq", "largest": 0.1, "where": "w", "runs": 2, "verdict_cells_changed": 0}
    pd.DataFrame([row]).to_csv(reports / "hardware.csv", index=False)
    pd.DataFrame({"cpu_id": ["x"]}).to_csv(reports / "machines.csv", index=False)
    build_report(tmp_path, reports, CONTEXT, also={"timings.md": "timings\n"})
    return tmp_path


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _clear(message: str, path: Path, *said: str) -> None:
    """One line naming the file, what is wrong, how to get it back; no advice to unpickle."""
    assert "\n" not in message and str(path) in message, message
    assert "pickle" not in message.lower() and "weights_only" not in message, message
    assert "dvc repro -s " in message and "dvc pull" in message, message
    for s in said:
        assert s in message, message


METRICS_DAMAGE = {  # content -> what the message must say
    "truncated": (lambda text: text[: len(text) // 2], "JSONDecodeError"),
    "empty": (lambda text: "", "JSONDecodeError"),
    "empty object": (lambda text: "{}", "is empty"),
    "list": (lambda text: "[]", "JSON list, not an object"),
    "no mAP": (
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "mAP"}),
        "lacks 'mAP'",
    ),
}


@pytest.mark.parametrize("case", sorted(METRICS_DAMAGE))
def test_a_damaged_metrics_file_is_one_clear_error_and_leaves_reports_unchanged(
    small_project, case
):
    reports = small_project / "reports"
    before = _digests(reports)
    assert {
        "results.csv",
        "README.md",
        "timings.md",
        "validation/cifar10/deepbit/usdh/0_0.json",
    } <= set(before)
    assert "hardware.csv" in before and "figures/map_vs_bits_cifar10_deepbit.png" in before
    path = Run("retrieval", "cifar10", "deepbit", "lsh", 16, 1, small_project).metrics
    damage, said = METRICS_DAMAGE[case]
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError) as err:
        build_report(small_project, reports, CONTEXT, also={"timings.md": "new\n"})
    _clear(str(err.value), path, said, "dvc repro -s evaluate@lsh-deepbit")
    assert _digests(reports) == before
    assert not list(small_project.glob(".reports.*"))  # no staging left behind


PER_QUERY_DAMAGE = {
    "missing": (None, FileNotFoundError, "not found"),
    "truncated": (lambda data: data[: len(data) // 2], ValueError, "cannot be read"),
    "empty": (lambda data: b"", ValueError, "cannot be read"),
    "garbage": (lambda data: bytes(range(256)) * 8, ValueError, "unpickling it is never tried"),
}


@pytest.mark.parametrize("case", sorted(PER_QUERY_DAMAGE))
def test_a_damaged_per_query_file_is_one_clear_error_and_leaves_reports_unchanged(
    small_project, case
):
    reports = small_project / "reports"
    before = _digests(reports)
    # the first per-query file the report reads (the registry puts LSH first)
    path = Run("retrieval", "cifar10", "deepbit", "lsh", 16, 0, small_project).per_query
    damage, kind, said = PER_QUERY_DAMAGE[case]
    # a changed input, so that a report written before the failure would differ
    fit = Run("retrieval", "cifar10", "deepbit", "itq", 16, 0, small_project).fit_record
    save_json(fit, {**json.loads(fit.read_text()), "fit_seconds": 9.0})
    if damage is None:
        shutil.rmtree(small_project / "queries")  # a clone without `dvc pull`
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(kind) as err:
        build_report(small_project, reports, CONTEXT)
    _clear(str(err.value), path, said, "dvc repro -s evaluate@lsh-deepbit")
    assert _digests(reports) == before
    assert not list(small_project.glob(".reports.*"))


def test_a_per_query_file_never_passes_on_numpys_advice_to_unpickle(tmp_path):
    from usdh.report.inputs import read_per_query

    pickled = tmp_path / "objects.npz"
    np.savez(pickled, ap=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError) as err:
        read_per_query(pickled, "rerun it (dvc repro -s x, or dvc pull)")
    _clear(str(err.value), pickled, "unpickling it is never tried")
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, query=np.arange(3))
    with pytest.raises(ValueError, match=r"lacks the per-query array\(s\) 'ap' \(holds query\)"):
        read_per_query(lacking, "rerun it (dvc repro -s x, or dvc pull)", ("ap",))
    single = tmp_path / "single.npy"
    np.save(single, np.arange(3))
    with pytest.raises(ValueError, match="single array, not an archive"):
        read_per_query(single, "rerun it (dvc repro -s x, or dvc pull)")


def test_every_reader_names_the_stage_that_writes_its_file(tmp_path):
    """Each section's reader refuses a damaged file, naming the stage to rerun."""
    from usdh.report.ablations import collect_ablations
    from usdh.report.classification import collect_classification
    from usdh.report.diagnostics import diagnostics_table

    def refused(path: Path, content: str, read, *said: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        with pytest.raises(ValueError) as err:
            read()
        _clear(str(err.value), path, *said)
        path.unlink()

    results = pd.DataFrame(columns=["method", "dataset", "protocol", "bits", "seed"])
    run = Run("ablations", "cifar10", "deepbit", "no_rotation", 16, 0, tmp_path)
    record = {"dataset": "cifar10", "method": "usdh", "variant": "no_rotation", "bits": 16}
    refused(
        run.metrics,
        json.dumps({**record, "seed": 0}),
        lambda: collect_ablations(tmp_path, results),
        "lacks 'mAP', 'mAP_tie_aware'",
        "dvc repro -s ablate@no_rotation",
    )
    run = Run("classification", "cifar10", "deepbit", "itq", 16, 0, tmp_path)
    refused(run.metrics, "[1, 2]", lambda: collect_classification(tmp_path), "classify@itq")
    refused(
        tmp_path / "metrics/classification/cifar10/deepbit/features.json",
        '{"dataset": "cifar10", "accur',
        lambda: collect_classification(tmp_path),
        "dvc repro -s classify-features",
    )
    run = Run("calibration", "cifar10", "1k-5k-59k", "lsh", 16, 0, tmp_path)
    refused(
        run.metrics,
        "{}",
        lambda: read_calibration(tmp_path),
        "is empty",
        "evaluate-calibration@lsh-1k-5k-59k",
    )
    record = tmp_path / "metrics/diagnostics/cifar10/deepbit/usdh_loss.json"
    refused(record, '{"runs": {}}', lambda: diagnostics_table(tmp_path), "dvc repro -s diagnose")
    run = Run("retrieval", "cifar10", "deepbit", "itq", 16, 0, tmp_path)
    record = {"dataset": "cifar10", "protocol": "deepbit", "method": "itq", "bits": 16}
    save_json(run.metrics, {**record, "seed": 0, "mAP": 0.5, "mAP_tie_aware": 0.5, "mAP_all": 0.4})
    refused(
        run.fit_record,
        "",
        lambda: collect_results(tmp_path),
        "JSONDecodeError",
        "dvc repro -s fit@itq-deepbit",
    )
    refused(
        run.fit_record,
        '{"fit_seconds": 1.0}',
        lambda: collect_results(tmp_path),
        "lacks 'n_train'",
        "dvc repro -s fit@itq-deepbit",
    )


def test_a_failed_move_into_reports_puts_every_old_output_back(small_project, monkeypatch):
    """The last step, moving the staged outputs in, undoes itself if a rename fails midway."""
    import os

    from usdh.report import build

    reports = small_project / "reports"
    before = _digests(reports)
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 7:  # a few outputs already replaced
            raise OSError("simulated failure")
        return real(src, dst)

    monkeypatch.setattr(build.os, "replace", flaky)
    with pytest.raises(OSError, match="simulated"):
        build_report(small_project, reports, CONTEXT, also={"timings.md": "new\n"})
    monkeypatch.undo()
    assert _digests(reports) == before
    assert not list(small_project.glob(".reports.*"))
    # and a report that succeeds writes the same bytes again, inputs untouched
    build_report(small_project, reports, CONTEXT, also={"timings.md": "timings\n"})
    assert _digests(reports) == before


LATE_DAMAGE = {  # files the report reads after it has written results.csv, tables and figures
    "calibration": ("metrics/calibration/cifar10/deepbit/lsh/16/0.json", "{}", "is empty"),
    "diagnostics": ("metrics/diagnostics/cifar10/deepbit/usdh_loss.json", "[]", "JSON list"),
    "features reference": (
        "metrics/classification/cifar10/deepbit/features.json",
        '{"dataset": "cifar10", "dim": 12',
        "JSONDecodeError",
    ),
}


@pytest.mark.parametrize("case", sorted(LATE_DAMAGE))
def test_an_input_read_late_leaves_reports_unchanged(small_project, case):
    """Before, the report had rewritten results.csv, verdict.csv and the figures by the time it
    read these; now it stops with nothing under reports/ changed."""
    reports = small_project / "reports"
    before = _digests(reports)
    relpath, content, said = LATE_DAMAGE[case]
    path = small_project / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    # and a changed input, so that a report written before the failure would differ
    fit = Run("retrieval", "cifar10", "deepbit", "itq", 16, 0, small_project).fit_record
    save_json(fit, {**json.loads(fit.read_text()), "fit_seconds": 9.0})
    with pytest.raises(ValueError) as err:
        build_report(small_project, reports, CONTEXT, also={"timings.md": "new\n"})
    _clear(str(err.value), path, said)
    assert _digests(reports) == before
    assert not list(small_project.glob(".reports.*"))
