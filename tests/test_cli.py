"""The stage commands end to end on real data (Oxford-17 from ../shared/data), with small knobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from usdh.cli import main
from usdh.layout import Run
from usdh.search import hamming_distances

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OXFORD = SHARED / "oxford17-256.tar.gz"


def write_params(folder: Path, **features) -> Path:
    params = {
        "datasets": {
            "oxford17": {
                "path": str(OXFORD),
                "download": False,
                "protocols": ["retrieval", "classification"],
                "train_subset": None,
                "rotation_subset": 34,
                "validation_queries": 68,
                "input_size": None,
            }
        },
        "split_seed": 0,
        "features": {
            "backbone": "efficientnet_lite0",
            "weights": "imagenet",
            "input_size": 32,
            "batch_size": 64,
            "dtype": "float32",
            "storage_dtype": "float32",
            "device": "cpu",
            "threads": 1,
            "num_workers": 0,
            "rotation_angles": [-5, 5],
            "rotation_mode": "crop",
            **features,
        },
        "experiment": {
            "dataset": "oxford17",
            "protocol": "retrieval",
            "methods": ["lsh", "itq", "usdh", "deepbit"],
            "bits": [16],
            "seeds": [0],
        },
        "methods": {
            "lsh": {"center": True},
            "itq": {"n_iter": 20},
            "usdh": {"epochs": 3, "batch_size": 8, "progress": False, "threads": 1},
            "deepbit": {"epochs": 2, "batch_size": 8, "progress": False, "threads": 1},
        },
        "finetune": {
            "methods": ["usdh"],
            "bits": [16],
            "seeds": [0],
            "n_trainable": 1,
            "input_size": None,
            "train": {"epochs": 1},
        },
        "evaluation": {"precision_at": [10, 100, 5000], "radius": 2},
        "validation": {
            "bits": 16,
            "seeds": [0, 1],
            "space": {"usdh": {"lr": [0.01, 0.03], "loss.semantic.weight": [3.0], "epochs": [1]}},
        },
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_prepare_split_features_on_oxford17(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    for command in ("prepare", "split", "features"):
        assert main([command, "oxford17"]) == 0
    split = json.loads((tmp_path / "data/splits/oxford17/retrieval/split.json").read_text())
    assert split["sizes"]["query"] == 340 and split["sizes"]["database"] == 1020
    out = tmp_path / "data/features/oxford17/efficientnet_lite0"
    feats = np.load(out / "features.npy")
    rots = np.load(out / "rotations.npy")
    rot_idx = np.load(out / "rotation_indices.npy")
    subset = np.load(tmp_path / "data/splits/oxford17/retrieval/rotation_subset.npy")
    assert feats.shape == (1360, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert rots.shape == (34, 2, 1280)
    assert (rot_idx == subset).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dataset"] == "oxford17" and prov["input_size"] == 32
    # rerunning the stage gives bitwise identical features (CPU determinism)
    first = feats.copy()
    assert main(["features", "oxford17"]) == 0
    assert np.array_equal(np.load(out / "features.npy"), first)

    # fit -> encode -> evaluate, and the metrics agree with an independent recomputation
    from usdh.metrics import mean_average_precision

    methods = ("lsh", "itq", "usdh", "deepbit")
    for method in methods:
        for command in ("fit", "encode", "evaluate"):
            assert main([command, method, "16", "0"]) == 0
    labels = np.load(tmp_path / "data/prepared/oxford17/labels.npy")
    q_idx = np.load(tmp_path / "data/splits/oxford17/retrieval/query.npy")
    db_idx = np.load(tmp_path / "data/splits/oxford17/retrieval/database.npy")
    maps = {}
    for method in methods:
        run = Run("retrieval", "oxford17", "retrieval", method, 16, 0, tmp_path)
        metrics = json.loads(run.metrics.read_text())
        q = np.load(run.codes_dir / "query.npy")
        db = np.load(run.codes_dir / "database.npy")
        assert q.shape == (340, 2) and db.shape == (1020, 2)
        expected = mean_average_precision(q, db, labels[q_idx], labels[db_idx])
        assert metrics["mAP"] == pytest.approx(expected)
        assert metrics["source"] == "Oxford-17 (256 px copy)"
        assert set(metrics["precision_at_n"]) == {"10", "100"}  # 5000 > database: dropped
        pr = run.pr_curve.read_text().splitlines()
        assert pr[0] == "radius,precision,recall,nonempty" and len(pr) == 18
        # the mAP@k curve ends at the whole database, where it is mAP@all
        mk = pd.read_csv(run.map_at_k)
        assert mk["k"].iloc[-1] == 1020 and mk["k"].is_monotonic_increasing
        assert mk["mAP"].iloc[-1] == pytest.approx(metrics["mAP_all"])
        # the examples: the same seeded queries for every method, their top hits by distance
        with np.load(run.per_query) as pq:
            shown, top = pq["example_query"], pq["example_top"]
            assert np.array_equal(pq["label"], labels[q_idx])
        d = hamming_distances(q[shown], db)
        pos = {int(i): j for j, i in enumerate(db_idx)}
        for row, hits in enumerate(top):
            ranked = [pos[int(i)] for i in hits]
            assert ranked == sorted(ranked, key=lambda j: (d[row, j], j))
            assert d[row, ranked[-1]] <= np.sort(d[row])[len(ranked) - 1]
        maps[method] = metrics["mAP"]
    # 17 balanced classes: random codes score about 1/17; real features do far better
    assert min(maps[m] for m in ("lsh", "itq", "usdh")) > 0.1
    # a refit whose encoding fails leaves its new model without codes, which evaluate names,
    # never beside the old model's codes
    import usdh.stages.fit as fit_stage

    def fails(*args, **kwargs):
        raise ValueError("encoding failed (the test)")

    real_encode = fit_stage.encode_run
    monkeypatch.setattr(fit_stage, "encode_run", fails)
    assert main(["fit", "itq", "16", "0"]) == 2
    itq_run = Run("retrieval", "oxford17", "retrieval", "itq", 16, 0, tmp_path)
    assert itq_run.model.is_file() and not itq_run.codes_dir.exists()
    capsys.readouterr()
    assert main(["evaluate", "itq", "16", "0"]) == 2
    assert "before encoding; run python -m usdh fit itq 16 0" in capsys.readouterr().err
    monkeypatch.setattr(fit_stage, "encode_run", real_encode)
    assert main(["fit", "itq", "16", "0"]) == 0

    # the layout's literal paths (usdh/layout.py)
    itq = tmp_path / "models/retrieval/oxford17/retrieval/itq/16/0"
    fit = json.loads((itq / "fit.json").read_text())
    assert fit["n_train"] == 680 and fit["params"]["n_iter"] == 20
    # the deep methods train on the same images as the shallow ones (the rotation term on the
    # seeded subset that has rotated views), and log every epoch
    for method, epochs in (("usdh", 3), ("deepbit", 6)):
        run = Run("retrieval", "oxford17", "retrieval", method, 16, 0, tmp_path)
        fit = json.loads(run.fit_record.read_text())
        assert fit["n_train"] == 680 and fit["train_rows"] == "train"
        assert fit["epochs"] == epochs and fit["steps"] == epochs * (680 // 8)
        log = run.train_log.read_text()
        assert len(log.splitlines()) == 1 + epochs
    assert "rotation" in log.splitlines()[0]

    # the paper's mode: the backbone's last unit fine-tuned with the head, every image re-encoded
    from usdh.backbones import build_backbone

    assert main(["finetune", "usdh", "16", "0"]) == 0
    ft = tmp_path / "models/finetune/oxford17/retrieval/usdh/16/0"
    record = json.loads((ft / "fit.json").read_text())
    assert record["mode"] == "finetune" and record["epochs"] == 1 and record["n_train"] == 680
    assert record["trained_units"] and record["train_images_per_s"] > 0
    tail = torch.load(ft / "tail.pt", weights_only=True)
    pretrained = build_backbone("efficientnet_lite0", "imagenet").trainable_tail(1).state_dict()
    assert tail.keys() == pretrained.keys()
    assert any(not torch.equal(tail[k], pretrained[k]) for k in tail)  # it did train
    q = np.load(tmp_path / "codes/finetune/oxford17/retrieval/usdh/16/0/query.npy")
    assert q.shape == (340, 2) and q.dtype == np.uint8
    fm = json.loads((tmp_path / "metrics/finetune/oxford17/retrieval/usdh/16/0.json").read_text())
    assert fm["mode"] == "finetune" and fm["mAP"] > 1 / 17

    # model selection on the validation split of the training pool, never on the queries: the
    # coordinate search tries 2 settings x 2 seeds, logs the validation mAP of every epoch
    assert main(["validate", "usdh"]) == 0
    folder = tmp_path / "reports/validation/oxford17/retrieval/usdh"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["n_settings"] == 2 and len(summary["settings"]) == 2
    assert summary["chosen_params"]["lr"] in (0.01, 0.03)
    val = json.loads((folder / "0_1.json").read_text())
    assert val["params"]["lr"] == 0.01 and 0 < val["val_mAP"] <= 1
    assert (val["n_val_query"], val["n_val_database"], val["train_images"]) == (68, 612, 612)
    assert len(val["val_mAP_per_epoch"]) == 1
    assert val["val_mAP_per_epoch"][-1] == pytest.approx(val["val_mAP"], abs=1e-6)
    assert "val_mAP" in (folder / "0_1_train_log.csv").read_text().splitlines()[0]
    assert "## usdh" in (folder.parent / "README.md").read_text()

    # an interrupted search resumes: a fit already recorded for the same setting, parameters
    # and features is reused, never one recorded with other parameters
    import usdh.stages.validate as validate_stage

    summary_text = (folder / "summary.json").read_text()
    (folder / "summary.json").unlink()
    refits: list[int] = []
    real_fit = validate_stage.fit_on_rows

    def counting_fit(*args, **kwargs):
        refits.append(args[2])  # the seed
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(validate_stage, "fit_on_rows", counting_fit)
    assert main(["validate", "usdh"]) == 0
    assert refits == [] and (folder / "summary.json").read_text() == summary_text
    stale = json.loads((folder / "0_1.json").read_text())
    stale["method_params"]["lr"] = 0.5
    (folder / "0_1.json").write_text(json.dumps(stale))
    assert main(["validate", "usdh"]) == 0
    assert refits == [1] and (folder / "summary.json").read_text() == summary_text
    assert json.loads((folder / "0_1.json").read_text())["method_params"]["lr"] == 0.01
    split = json.loads((tmp_path / "data/splits/oxford17/retrieval/split.json").read_text())
    q = np.load(tmp_path / "data/splits/oxford17/retrieval/val_query.npy")
    train = np.load(tmp_path / "data/splits/oxford17/retrieval/train.npy")
    assert split["sizes"]["val_query"] == 68 and np.isin(q, train).all()
    assert not np.isin(q, np.load(tmp_path / "data/splits/oxford17/retrieval/query.npy")).any()


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_calibration_on_gist_features(tmp_path, monkeypatch):
    """The calibration section end to end: GIST features into a folder of their own, the classic
    baselines and a diagnostic variant fitted and scored under the calibration group."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load(write_params(tmp_path).read_text())
    params["calibration"] = {
        "dataset": "oxford17",
        "protocols": ["retrieval"],
        "methods": ["itq", "lsh_uncentred"],
        "bits": [16],
        "seeds": [0, 1],
        "variants": {"lsh_uncentred": {"method": "lsh", "params": {"center": False}}},
        "features": {
            "backbone": "gist",
            "weights": "none",
            "input_size": 32,
            "batch_size": 64,
            "rotation_angles": [],
            "gist": {"orientations_per_scale": [8, 8, 4]},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for command in ("prepare", "split"):
        assert main([command, "oxford17"]) == 0
    assert main(["features", "oxford17", "--experiment", "calibration"]) == 0
    out = tmp_path / "data/features/oxford17/gist"
    assert not (tmp_path / "data/features/oxford17/efficientnet_lite0").exists()
    feats = np.load(out / "features.npy")
    assert feats.shape == (1360, 320) and np.isfinite(feats).all() and (feats >= 0).all()
    assert not (out / "rotations.npy").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["backbone"] == "gist" and prov["weights"] == "none"
    assert "[8, 8, 4]" in prov["layer"] and prov["input_size"] == 32
    first = feats.copy()
    assert main(["features", "oxford17", "--experiment", "calibration"]) == 0
    assert np.array_equal(np.load(out / "features.npy"), first)  # bitwise on rerun

    for name in ("itq", "lsh_uncentred"):
        for command in ("fit", "evaluate"):
            assert main([command, name, "--experiment", "calibration"]) == 0
    runs = {
        (name, seed): Run("calibration", "oxford17", "retrieval", name, 16, seed, tmp_path)
        for name in ("itq", "lsh_uncentred")
        for seed in (0, 1)
    }
    for run in runs.values():
        fit = json.loads(run.fit_record.read_text())
        assert fit["backbone"] == "gist" and fit["n_train"] == 680
        metrics = json.loads(run.metrics.read_text())
        assert 1 / 17 < metrics["mAP"] <= 1
    variant = json.loads(runs["lsh_uncentred", 0].fit_record.read_text())
    assert variant["method"] == "lsh" and variant["variant"] == "lsh_uncentred"
    assert variant["params"]["center"] is False
    # the main experiment's runs are untouched by the calibration
    assert not (tmp_path / "models/retrieval").exists()
    # re-encoding from the saved model gives the same codes
    codes = np.load(runs["itq", 1].codes_dir / "query.npy")
    assert main(["encode", "itq", "16", "1", "--experiment", "calibration"]) == 0
    assert np.array_equal(np.load(runs["itq", 1].codes_dir / "query.npy"), codes)


def test_calibration_variant_is_not_a_method_of_the_experiment(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["fit", "lsh_uncentred"]) == 2
    assert "not in experiment.methods" in capsys.readouterr().err


def test_unknown_dataset_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["prepare", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "oxford17" in err and "Traceback" not in err


def test_method_not_in_the_experiment_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["fit", "sh", "16", "0"]) == 2
    assert "experiment.methods" in capsys.readouterr().err
    assert main(["fit", "itq", "16"]) == 2
    assert "give both bits and seed, or neither" in capsys.readouterr().err


def test_missing_params_file_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "oxford17"]) == 2
    assert "--params" in capsys.readouterr().err


def test_a_setting_runs_the_experiments_methods_on_other_features(tmp_path, monkeypatch, capsys):
    """A settings entry end to end on GIST: rotated views through GIST (USDH's rotation term),
    a bank stage through GIST that knows nothing needs it, the experiment's methods fitted,
    re-encoded and scored under ``settings/``, the experiment's own runs untouched."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load(write_params(tmp_path).read_text())
    params["experiment"]["methods"] = ["itq", "usdh"]
    params["calibration"] = {
        "dataset": "oxford17",
        "protocols": ["retrieval"],
        "methods": ["itq"],
        "bits": [16],
        "seeds": [0],
        "features": {
            "backbone": "gist",
            "weights": "none",
            "input_size": 32,
            "batch_size": 64,
            "gist": {"orientations_per_scale": [8, 8, 4]},
        },
    }
    params["settings"] = [{"dataset": "oxford17", "protocol": "retrieval", "backbone": "gist"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for command in ("prepare", "split"):
        assert main([command, "oxford17"]) == 0
    assert main(["check"]) == 0
    assert main(["features", "oxford17", "--experiment", "calibration"]) == 0
    gist = tmp_path / "data/features/oxford17/gist"
    rotations = np.load(gist / "rotations.npy")
    assert rotations.shape == (34, 2, 320) and np.isfinite(rotations).all()
    assert main(["bank", "oxford17", "--experiment", "calibration"]) == 0
    bank = json.loads((tmp_path / "data/banks/oxford17/gist/provenance.json").read_text())
    assert bank["methods"] == [] and bank["bank"] is None
    for name in ("itq", "usdh"):
        assert main(["fit", name, "--setting", "oxford17/retrieval"]) == 0
        assert main(["evaluate", name, "--setting", "oxford17/retrieval"]) == 0
        run = Run("settings", "oxford17", "retrieval", name, 16, 0, tmp_path)
        fit = json.loads(run.fit_record.read_text())
        assert fit["backbone"] == "gist" and fit["n_train"] == 680
        assert fit["setting"] == "oxford17/retrieval"
        assert 1 / 17 < json.loads(run.metrics.read_text())["mAP"] <= 1
    assert not (tmp_path / "models/retrieval").exists()
    codes = np.load(run.codes_dir / "database.npy")
    assert main(["encode", "usdh", "--setting", "oxford17/retrieval"]) == 0
    assert np.array_equal(np.load(run.codes_dir / "database.npy"), codes)
    capsys.readouterr()
    # an entry that is not listed, and a setting beside the options it replaces, are refused
    assert main(["fit", "itq", "--setting", "oxford17/classification"]) == 2
    err = capsys.readouterr().err
    assert "setting 'oxford17/classification' is not listed" in err and "listed: oxford17/" in err
    assert main(["fit", "itq", "--setting", "oxford17/retrieval", "--protocol", "retrieval"]) == 2
    assert "without --protocol and --experiment" in capsys.readouterr().err
    assert main(["fit", "lsh", "--setting", "oxford17/retrieval"]) == 2
    assert "not in experiment.methods" in capsys.readouterr().err
