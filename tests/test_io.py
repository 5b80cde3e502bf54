"""Atomic writes: the target appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from usdh.io import atomic_path, save_json, save_npy


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "x.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    save_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError("interrupted")
    assert target.read_text().strip().endswith("}")


def test_written_files_get_umask_permissions(tmp_path):
    save_npy(tmp_path / "a.npy", np.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o666 & ~umask
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
