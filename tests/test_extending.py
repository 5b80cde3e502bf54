"""docs/extending.md, followed step by step with a method defined outside the project.

The method lives in its own package in a temporary folder, registered through a real entry point
(a ``.dist-info`` folder with ``entry_points.txt``, as ``pip install`` writes it); the pipeline's
commands then run it by name like a built-in, on real data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.test_cli import OXFORD, write_params
from usdh import registry
from usdh.layout import Run

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''
import numpy as np
from usdh.hasher import BaseHasher


class MedianHash(BaseHasher):
    """Random projections of centred features, each bit split at its training median."""

    _state = ("mean_", "projection_", "median_")

    def __init__(self, n_bits=32, random_state=0, scale=1.0):
        super().__init__(n_bits=n_bits, random_state=random_state)
        self.scale = scale

    def _fit(self, X):
        rng = np.random.default_rng(self.random_state)
        self.mean_ = X.mean(axis=0)
        self.projection_ = self.scale * rng.standard_normal((X.shape[1], self.n_bits))
        self.median_ = np.median((X - self.mean_) @ self.projection_, axis=0)

    def _project(self, X):
        return (X - self.mean_) @ self.projection_ - self.median_
'''

SPEC = """
from usdh.registry import MethodSpec

SPEC = MethodSpec("medianhash", "mypkg.medianhash:MedianHash")
"""


def make_plugin(folder: Path, entry: str = "medianhash = mypkg.spec:SPEC") -> Path:
    """The package ``mypkg`` and the metadata an install of it would leave."""
    (folder / "mypkg").mkdir(parents=True)
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "medianhash.py").write_text(MODULE)
    (folder / "mypkg" / "spec.py").write_text(SPEC)
    info = folder / "mypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[usdh.methods]\n{entry}\n")
    return folder


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    folder = make_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(folder))
    registry.methods.cache_clear()
    yield folder
    for name in [m for m in sys.modules if m.startswith("mypkg")]:
        del sys.modules[name]
    registry.methods.cache_clear()


def test_an_entry_point_method_is_registered_after_the_builtins(plugin_path):
    names = list(registry.methods())
    assert names[: len(registry.BUILTIN)] == [s.name for s in registry.BUILTIN]
    assert names[-1] == "medianhash"
    spec = registry.get_method("medianhash")
    assert not spec.deep and spec.views == ()
    x = np.random.default_rng(0).standard_normal((200, 12))
    hasher = spec.load()(n_bits=16, random_state=3).fit(x)
    bits = np.unpackbits(hasher.encode(x), axis=1)
    assert bits.shape == (200, 16) and (bits.mean(axis=0) == 0.5).all()  # median split


def test_a_broken_entry_point_is_named(tmp_path, monkeypatch):
    folder = make_plugin(tmp_path / "site", entry="medianhash = mypkg.spec:NOT_THERE")
    monkeypatch.syspath_prepend(str(folder))
    registry.methods.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"entry point 'medianhash'.*failed to load"):
            registry.methods()
    finally:
        registry.methods.cache_clear()
        for name in [m for m in sys.modules if m.startswith("mypkg")]:
            del sys.modules[name]


def test_specs_are_checked():
    with pytest.raises(ValueError, match="module:Class"):
        registry.MethodSpec("x", "no_colon")
    with pytest.raises(ValueError, match="unknown views"):
        registry.MethodSpec("x", "a:B", views=("augmented_typo",))
    with pytest.raises(ValueError, match="only a deep method"):
        registry.MethodSpec("x", "a:B", finetunable=True)
    with pytest.raises(ValueError, match="cannot be used in a path"):
        registry.MethodSpec("../x", "a:B")
    with pytest.raises(ValueError, match=r"unknown method 'nope'.*itq"):
        registry.get_method("nope")


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_the_pipeline_runs_an_outside_method_by_name(tmp_path):
    site = make_plugin(tmp_path / "site")
    work = tmp_path / "work"
    work.mkdir()
    params_path = write_params(work)
    params = yaml.safe_load(params_path.read_text())
    params["experiment"]["methods"] = ["itq", "medianhash"]  # step 3: the params.yaml block
    params["methods"] = {"itq": {"n_iter": 20}, "medianhash": {"scale": 2.0}}
    params["features"]["rotation_angles"] = []
    params.pop("finetune")
    params_path.write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), TQDM_DISABLE="1")

    def usdh(*args: str) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "usdh", *args], cwd=work, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr

    for command in ("prepare", "split", "features"):
        usdh(command, "oxford17")
    for command in ("fit", "encode", "evaluate"):
        usdh(command, "medianhash", "16", "0")
    run = Run("retrieval", "oxford17", "retrieval", "medianhash", 16, 0, work)
    metrics = json.loads(run.metrics.read_text())
    assert metrics["method"] == "medianhash" and metrics["mAP"] > 1 / 17  # better than chance
    fit = json.loads(run.fit_record.read_text())
    assert fit["params"] == {"n_bits": 16, "random_state": 0, "scale": 2.0}
    assert fit["train_rows"] == "train"  # a shallow method: the whole training pool
