"""The stage commands end to end on real data (Oxford-17 from ../shared/data), with small knobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from usdh.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OXFORD = SHARED / "oxford17-256.tar.gz"


def write_params(folder: Path, **features) -> Path:
    params = {
        "datasets": {
            "oxford17": {
                "path": str(OXFORD),
                "download": False,
                "protocols": ["retrieval", "classification"],
                "train_subset": 34,
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
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_prepare_split_features_on_oxford17(tmp_path, monkeypatch):
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
    subset = np.load(tmp_path / "data/splits/oxford17/retrieval/train_subset.npy")
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


def test_unknown_dataset_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["prepare", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "oxford17" in err and "Traceback" not in err


def test_missing_params_file_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "oxford17"]) == 2
    assert "--params" in capsys.readouterr().err
