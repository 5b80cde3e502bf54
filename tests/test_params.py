"""params.yaml is checked before any stage works: one clear message, and nothing written."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from usdh.classification import classify_codes
from usdh.cli import main
from usdh.fitting import merge_params
from usdh.params import LOSS_TERMS, ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_shipped_params_are_valid():
    validate_params(copy.deepcopy(DEFAULTS))


def _with(path: str, value):
    params = copy.deepcopy(DEFAULTS)
    *keys, last = path.split(".")
    node = params
    for k in keys:
        node = node[k]
    node[last] = value
    return params


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("experiment.methods", ["itq", "cnnh"], "unknown method 'cnnh'.*known"),
        ("experiment.methods", [], "non-empty list"),
        ("experiment.bits", [16, 12], "multiples of 8, got 12"),
        ("experiment.bits", [0], "multiples of 8, got 0"),
        ("experiment.seeds", [], "experiment.seeds' must be a non-empty list"),
        ("experiment.seeds", [0, 0], "twice"),
        ("experiment.dataset", "mnist", "experiment.dataset 'mnist' is not configured"),
        ("ablations.variants", {"x": {"loss": {"hinge": {"weight": 1}}}}, "unknown loss term"),
        ("ablations.variants", {"x": [1]}, "must map method parameters"),
        ("ablations.method", "itq_plus", "ablations.method"),
        ("classification.dataset", "caltech", "classification.dataset 'caltech'"),
        ("classification.bits", [10], "multiples of 8"),
        ("finetune.methods", ["itq"], "can be fine-tuned"),
        ("finetune.n_trainable", -1, "n_trainable"),
        ("calibration.dataset", "mnist", "calibration.dataset 'mnist'"),
        ("calibration.protocols", ["nuswide21"], "not split for cifar10"),
        ("calibration.methods", ["itq", "agh"], "unknown method 'agh'.*variants lsh_uncentred"),
        ("calibration.bits", [20], "multiples of 8"),
        ("calibration.features.backbone", "efficientnet_lite0", "must differ"),
        ("calibration.variants", {"../x": {"method": "lsh"}}, "cannot be used in a path"),
        ("calibration.variants", {"itq": {"method": "lsh"}}, "has a method's name"),
        ("calibration.variants", {"raw": {"method": "lsx"}}, "must name a known method"),
        ("calibration.variants", {"raw": {"method": "lsh", "params": [1]}}, "'params' must map"),
    ],
)
def test_bad_params_name_the_problem(path, value, match):
    with pytest.raises(ParamsError, match=match):
        validate_params(_with(path, value))


def test_the_first_stage_fails_with_one_message_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with("experiment.bits", [16, 20])))
    assert main(["prepare", "oxford17"]) == 2
    err = capsys.readouterr().err
    assert "experiment.bits" in err and "20" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_features_params_lays_a_sections_features_over_the_shared_ones():
    from usdh.params import features_params

    main_features = features_params(DEFAULTS)
    assert main_features == DEFAULTS["features"]
    gist = features_params(DEFAULTS, "calibration")
    assert gist["backbone"] == "gist" and gist["input_size"] == 32
    assert gist["device"] == DEFAULTS["features"]["device"]  # inherited
    assert DEFAULTS["features"]["backbone"] == "efficientnet_lite0"  # not modified


def test_the_loss_terms_params_checks_are_the_losses_terms():
    from usdh.losses import TERMS

    assert tuple(TERMS) == LOSS_TERMS


def test_merge_params_is_recursive_and_copies():
    base = {"epochs": 5, "loss": {"semantic": {"weight": 3.0, "construction": "cosine"}}}
    out = merge_params(base, {"loss": {"semantic": {"weight": 0.0}, "rotation": {"weight": 0}}})
    assert out == {
        "epochs": 5,
        "loss": {"semantic": {"weight": 0.0, "construction": "cosine"}, "rotation": {"weight": 0}},
    }
    assert base["loss"]["semantic"]["weight"] == 3.0  # untouched


def test_classify_codes_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (4, 32))

    def draw(n, noise):
        y = rng.integers(0, 4, n)
        bits = centres[y] ^ (rng.random((n, 32)) < noise)
        return bits.astype(np.uint8), y

    parts = [draw(n, 0.05) for n in (200, 100, 200)]
    result = classify_codes(*(a for p in parts for a in p), seed=0)
    assert result["accuracy"] > 0.95 and result["C"] in (0.01, 0.1, 1.0, 10.0)
    assert set(result["val_accuracy"]) == {"0.01", "0.1", "1.0", "10.0"}
    shuffled = [(x, rng.permutation(y)) for x, y in parts]
    assert classify_codes(*(a for p in shuffled for a in p), seed=0)["accuracy"] < 0.45


def test_every_deep_method_gets_the_same_selection_budget():
    from usdh.registry import methods
    from usdh.stages.validate import budget, check_space

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    spaces = params["validation"]["space"]
    deep = [m for m in params["experiment"]["methods"] if methods()[m].deep]
    assert sorted(spaces) == sorted(deep)
    budgets = {m: budget(check_space(spaces[m])) for m in deep}
    assert len(set(budgets.values())) == 1, budgets
    # the same knobs for each: learning rate, one loss weight, head width, epochs
    for m in deep:
        keys = list(spaces[m])
        assert keys[0] == "lr" and keys[2:] == ["hidden", "epochs"], (m, keys)
    # every method's params.yaml values lie in its space (they are the search's winners)
    for m in deep:
        chosen = params["methods"][m]
        assert chosen["lr"] in spaces[m]["lr"] and chosen["epochs"] in spaces[m]["epochs"]
        assert chosen.get("hidden") in spaces[m]["hidden"]
