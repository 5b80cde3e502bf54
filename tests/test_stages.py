"""The stage modules' shared pieces: one merge of method params, one pipeline backbone."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import yaml

from usdh.stages import features as features_stage
from usdh.stages import finetune as finetune_stage

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_finetune_train_overrides_merge_into_the_methods_loss_settings():
    params = copy.deepcopy(DEFAULTS)
    params["finetune"]["train"] = {"epochs": 2, "loss": {"entropy": {"weight": 0.5}}}
    got = finetune_stage.finetune_params(params, "usdh")
    loss = DEFAULTS["methods"]["usdh"]["loss"]
    assert got["epochs"] == 2 and got["lr"] == DEFAULTS["methods"]["usdh"]["lr"]
    # the override changes one option of one term; every other loss setting of params.yaml stays
    assert got["loss"]["entropy"] == {**loss["entropy"], "weight": 0.5}
    assert got["loss"]["semantic"] == loss["semantic"]
    assert got["loss"]["rotation"] == loss["rotation"]
    assert params["methods"]["usdh"]["loss"]["entropy"]["weight"] == loss["entropy"]["weight"]


class _Captured(Exception):
    pass


def test_features_and_finetune_stages_build_the_same_random_backbone(monkeypatch):
    """With ``weights: random`` the backbone is seeded; fine-tuning must start from the network
    whose features were cached, whatever the run's own seed."""
    params = copy.deepcopy(DEFAULTS)
    params["features"]["weights"] = "random"
    params["finetune"]["methods"] = ["usdh"]
    seen = {}

    def capture(name):
        def fake(*args, **kwargs):
            backbone = next(a for a in args if hasattr(a, "trainable_tail"))
            seen[name] = {k: v.clone() for k, v in backbone.state_dict().items()}
            raise _Captured

        return fake

    split = {"train": np.arange(4), "query": np.arange(2), "database": np.arange(4)}
    fake_ds = type("DS", (), {"labels": np.zeros(4, int), "source": "s", "name": "cifar10"})()
    fake_fs = type("FS", (), {"features": np.zeros((4, 8), np.float32)})()
    for module in (features_stage, finetune_stage):
        monkeypatch.setattr(module, "load_prepared", lambda *a, **k: fake_ds)
        monkeypatch.setattr(module, "load_split", lambda *a, **k: split)
    monkeypatch.setattr(finetune_stage, "load_features", lambda *a, **k: fake_fs)
    monkeypatch.setattr(features_stage, "extract_features", capture("features"))
    monkeypatch.setattr(finetune_stage, "finetune_method", capture("finetune"))
    for run in (
        lambda: features_stage.run(params, "cifar10"),
        lambda: finetune_stage.run(params, "usdh", 16, 7),  # a run seed unlike split_seed
    ):
        try:
            run()
        except _Captured:
            pass
    assert seen.keys() == {"features", "finetune"}
    for key, value in seen["features"].items():
        assert torch.equal(value, seen["finetune"][key]), key
    # and the seed matters: another split_seed gives another network
    params["split_seed"] = 1
    other = features_stage.pipeline_backbone(params).state_dict()
    assert any(not torch.equal(other[k], seen["features"][k]) for k in other)
