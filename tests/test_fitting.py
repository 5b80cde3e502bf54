"""The one fit path: which rows a fit reports, and the checkpoint folders a saved fit leaves."""

from __future__ import annotations

import numpy as np

from baselines.itq import ITQ
from usdh.fitting import Fitted, fit_on_rows, remove_checkpoints, save_fitted
from usdh.layout import CHECKPOINTS, Run


def test_a_fit_reports_every_row_it_was_given_by_default():
    x = np.random.default_rng(0).standard_normal((50, 12))
    split = {"train": np.arange(0, 50, 2)}
    fitted = fit_on_rows("itq", 8, 0, x, split)
    assert (fitted.part, fitted.n_train) == ("train", 25)
    assert fitted.hasher.trained_on("train", 25) == ("train", 25)


def _checkpoint(run: Run) -> None:
    run.checkpoints.mkdir(parents=True)
    (run.checkpoints / "checkpoint.pt").write_bytes(b"x")


def test_a_saved_fit_removes_its_checkpoint_and_the_parents_it_empties(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 12))
    run = Run("retrieval", "cifar10", "deepbit", "itq", 8, 0, tmp_path)
    _checkpoint(run)
    save_fitted(run, Fitted("itq", ITQ(n_bits=8).fit(x), "train", 40, 0.0))
    top = tmp_path / CHECKPOINTS
    assert top.is_dir() and not any(top.iterdir())  # .checkpoints/ itself stays
    assert run.model.is_file()


def test_parents_that_hold_another_runs_checkpoint_stay(tmp_path):
    runs = [Run("retrieval", "cifar10", "deepbit", "usdh", bits, seed, tmp_path)
            for bits, seed in ((16, 0), (16, 1), (32, 0))]  # fmt: skip
    for run in runs:
        _checkpoint(run)
    remove_checkpoints(runs[0])
    assert not runs[0].checkpoints.exists()
    assert runs[1].checkpoints.is_dir() and runs[2].checkpoints.is_dir()
    remove_checkpoints(runs[1])
    assert not runs[1].checkpoints.parent.exists()  # the 16-bit folder, now empty
    assert runs[2].checkpoints.is_dir()
    remove_checkpoints(runs[2])
    assert list((tmp_path / CHECKPOINTS).iterdir()) == []
    remove_checkpoints(runs[2])  # nothing left to remove: no error
    assert (tmp_path / CHECKPOINTS).is_dir()
