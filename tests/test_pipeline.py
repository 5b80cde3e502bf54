"""`dvc repro` of the real dvc.yaml, end to end, on Oxford-17 with a reduced params.yaml.

This is the pipeline CI can afford: the same stages and code as the default CIFAR-10 run, on 1,360
images at 32 px, all nine methods at one code length, two seeds and short deep training. It checks
the outputs a reader gets (results, ablations, classification, tables, figures, README), that a
second `dvc repro` does nothing, and that changing one method's parameter touches only that
method's stages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OXFORD = ROOT.parent / "shared" / "data" / "oxford17-256.tar.gz"
DEEP = {"epochs": 2, "batch_size": 16, "progress": False, "threads": 1}


def reduced_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"] = {
        "oxford17": {
            "path": str(OXFORD),
            "download": False,
            "protocols": ["retrieval", "classification", "per-class"],
            "train_subset": None,
            "rotation_subset": 200,
            "augmentation_subset": 100,
            "validation_queries": None,
            "input_size": None,
        }
    }
    params["features"].update(input_size=32, threads=1, rotation_angles=[-5, 5])
    params["experiment"].update(
        dataset="oxford17", protocol="retrieval", protocols=["retrieval", "per-class"]
    )
    params["experiment"].update(bits=[16], seeds=[0, 1])
    for name in ("deepbit", "usdh", "greedyhash", "bihalf", "cibhash"):
        params["methods"][name].update(DEEP)
    params["ablations"].update(
        bits=[16],
        seeds=[0],
        variants={
            "no_rotation": {"method": "usdh", "params": {"loss": {"rotation": {"weight": 0.0}}}},
            "semantic_only": {
                "method": "usdh",
                "params": {
                    "loss": {
                        "quantization": {"weight": 0.0},
                        "entropy": {"weight": 0.0},
                        "rotation": {"weight": 0.0},
                    }
                },
            },
            "bihalf_binarizer": {"method": "usdh", "params": {"binarizer": "bihalf"}},
            "bihalf_init_pytorch": {"method": "bihalf", "params": {"init": "pytorch"}},
            "usdh_matched": {"method": "usdh", "train_on": "augmentation_subset", "bits": [16]},
        },
    )
    params["diagnostics"].update(batch_size=64, batches=4)
    params["classification"].update(methods=["itq", "usdh", "bihalf"], bits=[16], seeds=[0])
    params["evaluation"]["precision_at"] = [10, 100]
    params["calibration"].update(
        dataset="oxford17", protocols=["retrieval"], methods=["itq", "lsh_uncentred"], bits=[16]
    )
    params["calibration"]["seeds"] = [0]
    # every method on the GIST features too (rotated views and a bank through GIST)
    params["settings"] = [{"dataset": "oxford17", "protocol": "retrieval", "backbone": "gist"}]
    return params


def project_copy(folder: Path, params: dict) -> Path:
    """What a stage runs or reads from the project (the code, dvc.yaml, the committed selection
    records and cross-machine tables the report reads) copied into ``folder``, with ``params``
    as its params.yaml; DVC is not initialised."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("usdh", "baselines", "reports/validation"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    for name in ("reports/hardware.csv", "reports/machines.csv"):  # committed report inputs
        shutil.copy(ROOT / name, folder / name)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def dvc(folder: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["TQDM_DISABLE"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_dvc_repro_end_to_end_on_oxford17(tmp_path):
    project_copy(tmp_path, reduced_params())  # a copy: the test edits it to check dependencies
    dvc(tmp_path, "init", "--no-scm", "-q")

    dvc(tmp_path, "repro")

    every = pd.read_csv(tmp_path / "reports" / "results.csv")
    methods = {"lsh", "pcah", "itq", "sh", "deepbit", "usdh", "greedyhash", "bihalf", "cibhash"}
    # the setting's rows (GIST): every method, at every length and seed of the experiment
    settings = every[every["group"] == "settings"]
    assert len(settings) == (len(methods) - 2) * 2 + 2 and set(settings["method"]) == methods
    assert set(settings["backbone"]) == {"gist"} and (settings["mAP"] > 1 / 17).all()
    results = every[every["group"] == "retrieval"]
    # methods x seeds x protocols at 16 bits; PCAH and SH, which do not depend on the seed, once
    assert len(results) == ((len(methods) - 2) * 2 + 2) * 2
    assert set(results.loc[results["method"].isin(["pcah", "sh"]), "seed"]) == {0}
    assert set(results["protocol"]) == {"retrieval", "per-class"}
    assert {"dataset", "protocol", "method", "bits", "seed", "mAP", "mAP_tie_aware"} <= set(
        results.columns
    )
    assert set(results["method"]) == methods
    assert results["mAP"].between(0, 1).all() and (results["mAP"] > 1 / 17).all()
    # equal footing: every method saw the same training images, and the report says how long
    # except CIBHash, which trains on the images of its bank of augmented views
    two_view = every["method"] == "cibhash"
    assert (every.loc[~two_view, "train_images"] == 680).all()
    assert (every.loc[two_view, "train_images"] == 100).all()
    assert (results["fit_seconds"] > 0).all()
    bank = json.loads(
        (tmp_path / "data/banks/oxford17/efficientnet_lite0/provenance.json").read_text()
    )
    assert bank["methods"] == ["cibhash"] and bank["files"]["augmentations.npy"]["shape"][1] == 4
    gist_bank = json.loads((tmp_path / "data/banks/oxford17/gist/provenance.json").read_text())
    assert gist_bank["methods"] == ["cibhash"] and gist_bank["backbone"] == "gist"
    ablations = pd.read_csv(tmp_path / "reports" / "ablations.csv")
    assert set(ablations["variant"]) == {
        "full",
        "no_rotation",
        "semantic_only",
        "bihalf_binarizer",
        "bihalf_init_pytorch",
        "usdh_matched",
    }
    assert list(ablations.columns[:6]) == [
        "dataset",
        "method",
        "variant",
        "train_on",
        "bits",
        "seed",
    ]
    # each variant beside its own method's full run
    assert set(ablations[ablations["variant"] == "full"]["method"]) == {"usdh", "bihalf"}
    assert set(ablations[ablations["variant"] == "bihalf_init_pytorch"]["method"]) == {"bihalf"}
    # the matched-data run trained on the bank's images only, and is judged against CIBHash
    fit = json.loads(
        (tmp_path / "models/ablations/oxford17/retrieval/usdh_matched/16/0/fit.json").read_text()
    )
    assert (fit["train_rows"], fit["n_train"]) == ("augmentation_subset", 100)
    matched = pd.read_csv(tmp_path / "reports" / "matched.csv")
    assert list(matched["method"]) == ["usdh"] and set(matched["train_on"]) == {
        "augmentation_subset"
    }
    assert matched[["matched_change", "full_change"]].notna().all().all()
    classification = pd.read_csv(tmp_path / "reports" / "classification.csv")
    assert set(classification["method"]) == {"itq", "usdh", "bihalf"}
    assert classification["accuracy"].between(1 / 17, 1).all()
    readme = (tmp_path / "reports" / "README.md").read_text()
    for heading in (
        "## Verdict: usdh against each method",
        "## What each method trained on",
        "## Why USDH lands where it lands",
        "## Ablations",
        "## Classification on codes",
        "features (1280-d",
        "## Across settings",
        "oxford17 `retrieval`, gist",
    ):
        assert heading in readme
    # the first paragraph states only what holds in all three settings (two protocols, GIST)
    assert readme.split("\n\n")[2].startswith("In words, as far as it holds across the 3 settings")
    diagnosis = json.loads(
        (tmp_path / "metrics/diagnostics/oxford17/retrieval/usdh_loss.json").read_text()
    )
    assert {r["seed"] for r in diagnosis["runs"]} == {0, 1}
    assert set(diagnosis["runs"][0]["loss"]) == methods | {"usdh_relaxed"}
    assert diagnosis["runs"][0]["loss"]["itq"]["quantization"] == 0.0  # binary codes
    figures = {p.name for p in (tmp_path / "reports" / "figures").iterdir()}
    assert {
        "ablations_oxford17.png",
        "training_oxford17_usdh.png",
        "across_settings.png",
    } <= figures
    # the main protocol's per-class heatmap and retrieval examples (thumbnails of the prepared
    # images), at the one code length run here; the curves of both protocols
    assert {
        "per_class_oxford17_retrieval_16bits.png",
        "examples_oxford17_retrieval_16bits_1.jpg",
        "map_at_k_oxford17_per-class.png",
        "precision_at_n_oxford17_retrieval.png",
    } <= figures
    assert readme.index("## Verdict") < readme.index("## Setup") < readme.index("## Reported")
    # the calibration: GIST features, the baselines and the diagnostic variant on them (no
    # published numbers exist for Oxford-17, so the report's comparison table shows none)
    calibration = pd.read_csv(tmp_path / "reports" / "calibration.csv")
    assert set(calibration["name"]) == {"itq", "lsh_uncentred"}
    assert set(calibration["method"]) == {"itq", "lsh"}
    assert (calibration["mAP"] > 1 / 17).all()
    gist = json.loads((tmp_path / "data/features/oxford17/gist/provenance.json").read_text())
    assert gist["backbone"] == "gist" and gist["feature_dim"] == 512
    # USDH's and DeepBit's rotated views through GIST: the same images and angles as Lite0's
    lite = json.loads(
        (tmp_path / "data/features/oxford17/efficientnet_lite0/provenance.json").read_text()
    )
    shape = lite["files"]["rotations.npy"]["shape"]
    assert gist["files"]["rotations.npy"]["shape"] == [*shape[:2], 512] and shape[1] == 2
    assert "protocol `per-class`" in readme
    for name in ("main_map", "verdict", "training", "ablations", "classification"):
        assert (tmp_path / "reports" / "tables" / f"{name}.tex").is_file()

    # nothing changed: nothing runs
    assert "Running stage" not in dvc(tmp_path, "repro")
    # one method's parameter: only that method's stages (and what reads them) are stale
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    n_iter = params["methods"]["itq"]["n_iter"]
    params["methods"]["itq"]["n_iter"] = 7
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    # (the check stage reads the whole file, and reruns to the same record; the calibration's
    # fits declare every calibrated base method's parameters: a variant's name is no key of
    # `methods`)
    assert stale_stages(tmp_path) == {
        "check",
        "fit@itq-retrieval",
        "fit@itq-per-class",
        "classify@itq",
        "fit-calibration@itq-retrieval",
        "fit-calibration@lsh_uncentred-retrieval",
        "fit-settings@itq-setting0",
    }
    params["methods"]["itq"]["n_iter"] = n_iter
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale_stages(tmp_path) == set()

    # one line of code: exactly the stages that run it (dvc.yaml's deps are the import closures)
    def touched(*relpaths: str) -> set[str]:
        paths = [tmp_path / relpath for relpath in relpaths]
        originals = [path.read_text() for path in paths]
        for path, original in zip(paths, originals, strict=True):
            path.write_text(original + "# a comment\n")
        try:
            return {name.split("@")[0] for name in stale_stages(tmp_path)}
        finally:
            for path, original in zip(paths, originals, strict=True):
                path.write_text(original)

    calibration = {
        "features-calibration", "bank-calibration", "fit-calibration", "evaluate-calibration",
    }  # fmt: skip
    settings = {"fit-settings", "evaluate-settings"}
    everything = {
        "check", "prepare", "split", "features", "bank", "fit", "evaluate", "ablate", "diagnose",
        "classify", "classify-features", "report", *calibration, *settings,
    }  # fmt: skip
    assert touched("usdh/search.py") == {
        "evaluate", "ablate", "evaluate-calibration", "evaluate-settings",
    }  # fmt: skip
    assert touched("usdh/codes.py") == {
        "check", "fit", "evaluate", "ablate", "diagnose", "classify", "fit-calibration",
        "evaluate-calibration", *settings,
    }  # fmt: skip
    assert touched("usdh/hasher.py") == {
        "check", "fit", "ablate", "diagnose", "classify", "fit-calibration", "fit-settings",
    }  # fmt: skip

    assert touched("usdh/report/build.py") == {"report"}
    # (not the shallow fits nor the classification of stored features: they read features from
    # disk without torch, usdh/feature_store.py)
    assert touched("usdh/augment.py") == {
        "check", "features", "bank", "features-calibration", "bank-calibration", "fit", "ablate",
        "diagnose", "classify", "fit-settings",
    }  # fmt: skip
    assert touched("usdh/cli.py") == everything
    # the data stages run only the code that computes them: method, training, evaluation and
    # report code (and the checking of the whole params file) never make them stale, file by file
    data_stages = {
        "prepare",
        "split",
        "features",
        "bank",
        "features-calibration",
        "bank-calibration",
    }
    # (all of them at once, one `dvc status`: a stage that one file makes stale, the set makes
    # stale too; file by file, only to name the culprit)
    if touched(*METHOD_CODE) & data_stages:
        culprits = [f for f in METHOD_CODE if touched(f) & data_stages]
        pytest.fail(f"data stages depend on method code: {culprits}")
    assert stale_stages(tmp_path) == set()

    # the stages that need no torch run without it, and compute the same bytes
    itq = [
        p
        for kind in ("codes", "metrics", "queries")
        for p in sorted((tmp_path / kind / "retrieval").rglob("*"))
        if p.is_file() and "/itq/" in p.as_posix()
    ]
    before = {p: p.read_bytes() for p in itq}
    for command in (["fit", "itq"], ["evaluate", "itq"], ["report"]):
        without_torch(tmp_path, command)
    assert len(itq) >= 6 and all(p.read_bytes() == before[p] for p in itq)
    fit = json.loads(next((tmp_path / "models/retrieval").rglob("itq/16/0/fit.json")).read_text())
    assert "torch" not in fit["environment"]["libraries"]


#: run ``python -m usdh`` with torch and torchvision unimportable (a meta-path finder that refuses
#: them: setting sys.modules["torch"] = None would also break scipy's array-API checks)
_NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"{name} is blocked by the test")
sys.meta_path.insert(0, NoTorch())
from usdh.cli import main
sys.exit(main(sys.argv[1:]))
"""


def without_torch(folder: Path, command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *command],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, TQDM_DISABLE="1"),
    )
    assert out.returncode == 0, f"usdh {' '.join(command)} without torch:\n{out.stderr}"


#: code that the data stages (prepare, split, features, bank) must not depend on: every file of
#: the methods, the trainer, the fitting, the evaluation, the report and the full params check
METHOD_CODE = sorted(
    str(p.relative_to(ROOT))
    for pattern in (
        "usdh/registry.py",
        "usdh/method.py",
        "usdh/losses.py",
        "usdh/train/*.py",
        "usdh/fitting.py",
        "usdh/metrics.py",
        "usdh/search.py",
        "usdh/paramcheck.py",
        "usdh/report/*.py",
        "baselines/*.py",
    )
    for p in ROOT.glob(pattern)
)


def stale_stages(folder: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    status = dvc(folder, "status")
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and line[0] != "\t"}


def _out_hashes(folder: Path, stages: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """The output hashes DVC recorded for ``stages`` in ``folder``'s dvc.lock."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    return {s: [(o["path"], o["md5"]) for o in lock[s]["outs"]] for s in stages}


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_the_data_stages_write_the_same_bytes_in_two_folders_and_on_a_rerun(tmp_path):
    """Their outputs hold only what their inputs determine (no paths, times or code revision),
    so two clones share them and a rerun that computes the same numbers leaves DVC's early
    cut-off intact: nothing below reruns."""
    params = reduced_params()
    stages = ("prepare@oxford17", "split@oxford17", "features@oxford17")
    hashes = []
    for name in ("first", "second"):
        folder = project_copy(tmp_path / name / "project", params)
        dvc(folder, "init", "--no-scm", "-q")
        dvc(folder, "repro", "features@oxford17")
        hashes.append(_out_hashes(folder, stages))
        # the timings went to the stage's record, beside the outputs
        record = json.loads((folder / "metrics/timings/features@oxford17.json").read_text())
        assert record["wall_s"] > 0 and record["probe"]["images_per_s"] > 0
        assert record["machine"]["cores"] >= 1
    assert hashes[0] == hashes[1]
    first = tmp_path / "first" / "project"
    dvc(first, "repro", "-f", "-s", "prepare@oxford17")
    dvc(first, "repro", "-f", "-s", "features@oxford17")
    assert _out_hashes(first, stages) == hashes[0]
    provenance = (first / "data/features/oxford17/efficientnet_lite0/provenance.json").read_text()
    for word in ("wall_time", "images_per_s", "git_revision", str(tmp_path)):
        assert word not in provenance
    assert str(tmp_path) not in (first / "data/prepared/oxford17/meta.json").read_text()
