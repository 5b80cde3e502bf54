"""params.yaml is checked before any stage works: one clear message, and nothing written."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from usdh.classification import classify_codes
from usdh.cli import main
from usdh.fitting import merge_params
from usdh.paramcheck import validate_params
from usdh.params import LOSS_TERMS, ParamsError, load_params, params_source

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


_LITE = "efficientnet_lite0"


def _setting(dataset: str, protocol: str, backbone: str) -> dict[str, str]:
    return {"dataset": dataset, "protocol": protocol, "backbone": backbone}


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
        (
            "ablations.variants",
            {"x": {"method": "usdh", "params": {"loss": {"hinge": {"weight": 1}}}}},
            r"variants\.x\.params\.loss\.hinge' is not a loss term",
        ),
        (
            "ablations.variants",
            {"x": {"method": "itq", "params": {"n_iters": 3}}},
            r"variants\.x\.params\.n_iters' is not a parameter of itq",
        ),
        ("ablations.variants", {"x": [1]}, r"ablations\.variants\.x"),
        ("ablations.variants", {"x": {"method": "cnnh"}}, "must be one of experiment.methods"),
        ("ablations.variants", {"itq": {"method": "itq"}}, "has the name of a method"),
        (
            "ablations.variants",
            {"x": {"method": "itq", "train_on": "test"}},
            r"ablations\.variants\.x\.train_on",
        ),
        ("ablations.variants", {"x": {"method": "itq", "bits": [12]}}, "multiples of 8"),
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
        (
            "calibration.variants",
            {"raw": {"method": "lsh", "params": [1]}},
            r"'calibration\.variants\.raw\.params': input should be a valid dictionary",
        ),
        # the schema (usdh/schema.py): typos and wrong types, with the key path and what is allowed
        ("methods.itq.n_iters", 5, r"'methods\.itq\.n_iters' is not a parameter of itq.*n_iter"),
        ("methods.usdh.epoch", 3, r"'methods\.usdh\.epoch' is not a parameter.*epochs"),
        ("methods.itq", [50], r"'methods\.itq': input should be a valid dictionary, got \[50\]"),
        ("methods.itq.n_bits", 16, "not a parameter of itq"),  # every run sets it
        ("features.input_sise", 96, r"'features\.input_sise' is not a known key.*input_size"),
        ("datasets.cifar10.protocol", ["deepbit"], r"not a known key.*protocols"),
        ("split_seed", 1.7, r"'split_seed': input should be a valid integer, got 1\.7"),
        ("evaluation.radius", 2.9, r"'evaluation\.radius': input should be a valid integer"),
        ("evaluation.radius", "two", r"'evaluation\.radius'.*got 'two'"),
        ("evaluation.precision_at", ["100"], r"'evaluation\.precision_at\.0'.*got '100'"),
        ("experiment.seeds", [0, True], r"'experiment\.seeds\.1'.*valid integer"),
        ("features.rotation_mode", "crop ", r"'features\.rotation_mode'.*'crop' or 'fill'"),
        ("methods.usdh.loss.semantic.kk", 3, r"semantic\.kk' is not an option.*construction"),
        ("methods.usdh.loss.semantik", {"weight": 1}, r"'methods\.usdh\.loss\.semantik' is not"),
        ("calibration.features.gist.block", 4, r"gist\.block' is not a known key.*blocks"),
        # every value of a method through its class's check_params (issue 32), with YAML's traps
        (
            "methods.itq.n_iter",
            "50",
            r"'methods\.itq\.n_iter': .*got '50'.*write the number 50",
        ),
        ("methods.lsh.center", "false", r"'methods\.lsh\.center': center.*'false'.*true or false"),
        ("methods.usdh.epochs", "5", r"'methods\.usdh\.epochs': stage epochs .*got '5'"),
        ("methods.usdh.lr", -0.1, r"'methods\.usdh\.lr': stage lr must be a finite number > 0"),
        ("methods.usdh.lr", "3e-3", r"got '3e-3'.*write the number 0\.003.*3\.0e-3"),
        ("methods.usdh.device", "gpu", r"'methods\.usdh\.device': unknown device 'gpu'"),
        ("methods.usdh.threads", 0, r"'methods\.usdh\.threads': threads must be an integer >= 1"),
        ("methods.usdh.activation", "relux", r"'methods\.usdh\.activation'.*relux"),
        (
            "methods.usdh.optimizer",
            "adamw",
            r"'methods\.usdh\.optimizer': optimizer must be",
        ),
        ("methods.usdh.init", "xavier", r"'methods\.usdh\.init': init must be one of"),
        ("methods.usdh.val_fraction", 1.0, r"val_fraction must lie in \[0, 1\)"),
        (
            "methods.greedyhash.hidden",
            0,
            r"'methods\.greedyhash\.hidden': hidden must be",
        ),
        ("methods.bihalf.binarizer", "bihalves", r"'methods\.bihalf\.binarizer'.*bihalves"),
        (
            "methods.usdh.loss.semantic.construction",
            "cosin",
            r"'methods\.usdh\.loss\.semantic\.construction': unknown .* 'cosin'; choose one",
        ),
        (
            "methods.deepbit.loss.entropy.weight",
            -1.0,
            r"'methods\.deepbit\.loss\.entropy\.weight': the weight of .* must be .* >= 0",
        ),
        (
            "ablations.variants.no_semantic.params.loss.semantic.weight",
            -2.0,
            r"^params\.yaml: 'ablations\.variants\.no_semantic\.params\.loss\.semantic\.weight'",
        ),
        ("experiment.methods", ["itq", "usdh", "itq"], "lists a method twice"),
        ("features.device", "gpu", r"'features\.device': unknown device 'gpu'"),
        ("features.backbone", "resnet50", r"'features\.backbone': unknown backbone 'resnet50'"),
        ("split_seed", -1, r"'split_seed': input should be greater than or equal to 0, got -1"),
        ("evaluation.radius", 99, r"evaluation\.radius 99 must be below every code length"),
        ("evaluation.radius", -1, r"'evaluation\.radius'.*greater than or equal to 0"),
        ("datasets.oxford17.protocols", ["retrival"], r"unknown protocol 'retrival' for oxford17"),
        ("datasets.cifar10.train_subset", -5, r"train_subset': a count of images.*got -5"),
        ("datasets.cifar10.train_subset", 1.5, r"train_subset': a count of images.*got 1\.5"),
        ("diagnostics.batches", 0, r"'diagnostics\.batches'.*greater than or equal to 1"),
        ("features.augmentation.jitter", [0.4, 0.4, 0.4], r"augmentation\.jitter'.*at least 4"),
        ("features.augmentation.crop_scale", [0.5], r"augmentation\.crop_scale'.*at least 2"),
        ("evaluation", None, r"'evaluation': input should be a valid"),
        ("validation.seeds", [], r"'validation\.seeds' must be a non-empty list"),
        ("validation.bits", 12, r"validation\.bits' must hold multiples of 8"),
        ("validation.space.usdh.lrr", [0.1], r"'validation\.space\.usdh\.lrr' is not a param"),
        ("validation.space.usdh.lr", [0.1, -1.0], r"'validation\.space\.usdh\.lr': stage lr"),
        ("validation.space.usdh.lr", [], r"'validation\.space\.usdh\.lr': list should have"),
        ("validation.space.cnnh", {"lr": [1.0]}, r"'validation\.space\.cnnh': 'cnnh' is not a"),
        # the settings: each one a dataset, protocol and features some stage provides, once
        ("settings", [_setting("mnist", "deepbit", "gist")], r"dataset 'mnist' is not configured"),
        ("settings", [_setting("cifar10", "retrieval", "gist")], r"'retrieval' is not split for"),
        ("settings", [_setting("cifar10", "1k-5k-59k", _LITE)], r"is the experiment's own"),
        ("settings", [_setting("fashion_mnist", "1k-69k", "gist")], r"no stage computes 'gist'"),
        ("settings", [_setting("cifar10", "deepbit", "gist")] * 2, r"listed twice"),
        ("settings", [_setting("cifar10", "deepbit", "vgg17")], r"settings\.0\.backbone'.*unknown"),
        ("settings", [{"dataset": "cifar10", "protocol": "deepbit"}], r"settings\.0\.backbone"),
        ("calibration.features.rotation_angles", [], r"deepbit, usdh train on rotated views"),
    ],
)
def test_bad_params_name_the_problem(path, value, match):
    with pytest.raises(ParamsError, match=match):
        validate_params(_with(path, value))


def test_several_problems_are_listed_together():
    params = _with("methods.itq.n_iters", 5)
    params["features"]["input_sise"] = 96
    with pytest.raises(ParamsError, match="2 problems") as info:
        validate_params(params)
    assert "n_iters" in str(info.value) and "input_sise" in str(info.value)


def test_a_missing_evaluation_section_is_named():
    params = copy.deepcopy(DEFAULTS)
    del params["evaluation"]
    with pytest.raises(ParamsError, match="'evaluation' is missing"):
        validate_params(params)


def test_a_wrong_value_of_a_method_is_reported_once_not_in_every_variant():
    """A variant inherits its method's values: the mistake is named where it was written."""
    with pytest.raises(ParamsError) as info:
        validate_params(_with("methods.usdh.lr", -0.1))
    assert "problems" not in str(info.value) and "variants" not in str(info.value)


def test_the_schemas_names_are_the_registries():
    """The schema names backbones and protocols without importing model or data code."""
    from usdh.backbones import BACKBONES
    from usdh.data import PROTOCOLS
    from usdh.schema import ANY_DATASET_PROTOCOLS, BACKBONE_NAMES, DATASET_PROTOCOLS

    assert set(BACKBONE_NAMES) == set(BACKBONES)
    generic = {p.name for p in PROTOCOLS.values() if p.dataset is None}
    assert set(ANY_DATASET_PROTOCOLS) == generic
    for dataset, names in DATASET_PROTOCOLS.items():
        own = {p.name for p in PROTOCOLS.values() if p.dataset == dataset}
        assert own <= set(names) and set(names) - own <= generic, dataset


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("split_seed: 0\nmethods:\n  itq: {n_iter: 50}\n  itq: {n_iter: 5}\n")
    with pytest.raises(ParamsError, match=r"mine\.yaml: the key 'itq' is given twice.*3 and 4"):
        load_params(path)


def test_a_params_file_that_is_not_text_says_so(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ParamsError, match="is not a text file"):
        load_params(path)


def test_messages_name_the_params_file_that_was_read(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(_with("split_seed", -1)))
    with params_source(path), pytest.raises(ParamsError, match=r"^\S*other\.yaml: 'split_seed'"):
        validate_params(load_params(path))
    # outside the block (an API user who read another file) messages name params.yaml again
    with pytest.raises(ParamsError, match=r"^params\.yaml: 'split_seed'"):
        validate_params(load_params(path))


def test_every_class_checks_its_values_without_data():
    """check_params needs no features: what paramcheck runs before any stage works."""
    from usdh.registry import method_class, methods

    for name in methods():
        assert method_class(name)(n_bits=16).check_params() is not None
        with pytest.raises(ValueError, match="n_bits"):
            method_class(name)(n_bits=12).check_params()


def test_the_schema_follows_the_methods_signatures():
    """methods.<m> may hold exactly the class's keyword arguments (less n_bits, random_state)."""
    import inspect

    from usdh.paramcheck import method_keys
    from usdh.registry import method_class, methods

    for name in methods():
        sig = inspect.signature(method_class(name))
        assert set(method_keys(name)) == set(sig.parameters) - {"n_bits", "random_state"}
    for name, given in DEFAULTS["methods"].items():
        assert set(given or {}) <= set(method_keys(name)), name


@pytest.mark.parametrize(
    ("command", "path", "value"),
    [
        # the check stage, upstream of every stage under dvc repro, checks the whole file
        ("check", "methods.itq.n_iters", 5),
        ("check", "split_seed", 1.7),
        ("check", "features.input_sise", 96),
        # a data stage run on its own checks the sections it reads
        ("prepare", "datasets.cifar10.download", "yes"),
        ("split", "split_seed", 1.7),
        ("features", "features.input_sise", 96),
        ("bank", "features.batch_size", "8"),
        # values the class checks, and cross-section facts, before anything is written
        ("check", "methods.itq.n_iter", "50"),
        ("check", "methods.usdh.lr", -0.003),
        ("check", "methods.usdh.loss.semantic.construction", "cosin"),
        ("check", "evaluation.radius", 99),
        ("check", "features.backbone", "resnet50"),
        ("prepare", "datasets.oxford17.protocols", ["retrival"]),
        ("split", "split_seed", -1),
        ("features", "features.device", "gpu"),
        ("bank", "features.augmentation.jitter", [0.4, 0.4, 0.4]),
    ],
)
def test_a_typo_fails_the_first_stage_in_one_line(tmp_path, command, path, value):
    """As a user runs it: ``python -m usdh <command>``, exit code 2, one line, nothing written."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(path, value)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [] if command == "check" else ["cifar10"]
    out = subprocess.run(
        [sys.executable, "-m", "usdh", command, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and out.stdout == ""
    err = out.stderr
    assert err.startswith(f"usdh {command}: error: params.yaml: ") and "Traceback" not in err
    assert path in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_check_stage_fails_with_one_message_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with("experiment.bits", [16, 20])))
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "experiment.bits" in err and "20" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_check_record_stays_byte_identical_while_params_are_valid(tmp_path, monkeypatch):
    """Its bytes are what DVC compares: a valid change elsewhere (a method's knob, a seed) must
    leave them as they are, so that the data stages below the check stay up to date."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULTS))
    assert main(["check"]) == 0
    before = (tmp_path / "data" / "params-checked.json").read_bytes()
    changed = _with("methods.itq.n_iter", 7)
    changed["experiment"]["seeds"] = [0, 1, 2, 3, 4]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
    assert main(["check"]) == 0
    assert (tmp_path / "data" / "params-checked.json").read_bytes() == before


def test_features_params_lays_a_sections_features_over_the_shared_ones():
    from usdh.params import features_params

    main_features = features_params(DEFAULTS)
    assert main_features == DEFAULTS["features"]
    gist = features_params(DEFAULTS, "calibration")
    assert gist["backbone"] == "gist" and gist["input_size"] == 32
    assert gist["device"] == DEFAULTS["features"]["device"]  # inherited
    assert DEFAULTS["features"]["backbone"] == "efficientnet_lite0"  # not modified


def test_a_datasets_input_size_lies_between_the_shared_features_and_a_sections():
    from usdh.params import features_params

    params = _with("datasets.oxford17.input_size", 64)
    assert features_params(params, dataset="oxford17")["input_size"] == 64
    assert (
        features_params(params, dataset="cifar10")["input_size"]
        == DEFAULTS["features"]["input_size"]
    )  # null: the shared size
    assert features_params(params)["input_size"] == DEFAULTS["features"]["input_size"]
    # a section's own features (calibration's GIST at 32 px) win over the dataset's size
    params = _with("datasets.cifar10.input_size", 64)
    assert features_params(params, "calibration", "cifar10")["input_size"] == 32
    with pytest.raises(ParamsError, match=r"'datasets\.nope'"):
        features_params(params, dataset="nope")


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
