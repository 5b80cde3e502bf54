"""Bad files, faults and interruptions, as a user meets them (docs/reliability.md lists them all):
each gets one clear error that names the file and the fix, or is survived."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.itq import ITQ
from baselines.pcah import PCAH
from tests.data_fixtures import write_class_tree
from tests.test_train import ANGLES, _config, clustered
from usdh import layout
from usdh.cli import main
from usdh.data import DataError
from usdh.data._files import read_tar, verify_archive
from usdh.data.oxford17 import read_oxford17
from usdh.features import load_features, save_features
from usdh.io import atomic_path, save_npy, staged_dir
from usdh.metrics import evaluate_retrieval
from usdh.train import CHECKPOINT_FILE, LOG_FILE, FeatureBatches, train

ROOT = Path(__file__).resolve().parents[1]
OXFORD = ROOT.parent / "shared" / "data" / "oxford17-256.tar.gz"


# -- checkpoints -----------------------------------------------------------------------------------
def _damaged_checkpoints(folder: Path) -> dict[str, bytes]:
    good = (folder / CHECKPOINT_FILE).read_bytes()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "text": b"not a checkpoint\n",
        "malicious pickle": pickle.dumps(Evil()),
        "foreign torch file": _torch_bytes({"weights": torch.zeros(3)}),
    }


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_an_unreadable_checkpoint_is_set_aside_and_training_starts_afresh(tmp_path):
    x, rot, _ = clustered()
    data = FeatureBatches(x, rot, ANGLES)
    fresh = train(data, 16, _config())
    train(data, 16, _config(), checkpoint_dir=tmp_path)
    for kind, blob in _damaged_checkpoints(tmp_path).items():
        (tmp_path / CHECKPOINT_FILE).write_bytes(blob)
        with pytest.warns(UserWarning) as caught:
            again = train(data, 16, _config(), checkpoint_dir=tmp_path, resume=True)
        ours = [str(w.message) for w in caught if str(tmp_path) in str(w.message)]
        text = " ".join(ours)  # (torch may warn about a foreign pickle protocol as well)
        assert str(tmp_path / CHECKPOINT_FILE) in text and "from scratch" in text, kind
        assert "weights_only" not in text, kind  # no advice to unpickle untrusted code
        assert again.resumed_at is None, kind
        for name, value in fresh.model.state_dict().items():
            assert torch.equal(value, again.model.state_dict()[name]), (kind, name)


def test_another_thread_count_does_not_resume(tmp_path):
    """Weights summed over another number of threads match neither run bitwise: the thread
    count is part of the checkpoint's fingerprint."""
    x, rot, _ = clustered()
    data = FeatureBatches(x, rot, ANGLES)
    train(data, 16, _config(threads=1), checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="thread count"):
        other = train(data, 16, _config(threads=2), checkpoint_dir=tmp_path, resume=True)
    assert other.resumed_at is None
    again = train(data, 16, _config(threads=2), checkpoint_dir=tmp_path, resume=True)
    assert again.resumed_at == 6  # its own checkpoint is resumed (here: at the end)


# -- files on disk ---------------------------------------------------------------------------------
@pytest.fixture
def saved_itq(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 24))
    model = ITQ(n_bits=16, n_iter=5).fit(x)
    path = tmp_path / "model.npz"
    model.save(path)
    return path, x


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_a_damaged_model_file_names_itself_and_the_fix(saved_itq, kind):
    path, _ = saved_itq
    good = path.read_bytes()
    blob = {"truncated": good[: len(good) // 2], "empty": b"", "text": b"hello\n"}[kind]
    path.write_bytes(blob)
    with pytest.raises(ValueError, match="fit the method again") as info:
        ITQ.load(path)
    assert str(path) in str(info.value) and "allow_pickle" not in str(info.value)


def test_a_model_whose_metadata_contradicts_its_arrays_is_refused(saved_itq):
    path, _ = saved_itq
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    meta["params"]["n_bits"] = 32  # hand-edited: the rotation still gives 16 bits
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ValueError, match=r"32 bits.*16-bit codes"):
        ITQ.load(path)


def _itq_run(tmp_path: Path, bits: int = 16, seed: int = 0, model_bits: int | None = None):
    """An ITQ run fitted and saved as the fit stage does (model and fit record), its features
    and a split; ``model_bits`` puts a model of another length under the run's path."""
    from usdh.fitting import Fitted, save_fitted

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 40))
    split = {"query": np.arange(20), "database": np.arange(20, 120), "train": np.arange(20, 120)}
    run = layout.Run("retrieval", "toy", "retrieval", "itq", bits, seed, tmp_path)
    hasher = ITQ(n_bits=model_bits or bits, random_state=seed, n_iter=3).fit(x[20:])
    save_fitted(run, Fitted("itq", hasher, "train", 100, 0.1))
    return run, x, split


def test_a_model_of_another_length_than_its_path_is_refused(tmp_path):
    """A 32-bit model under itq/16/0 was encoded and scored under the 16-bit run's name."""
    from usdh.stages.encode import encode_run

    run, x, split = _itq_run(tmp_path, bits=16, model_bits=32)
    with pytest.raises(ValueError, match=r"holds a 32-bit model.*16-bit run.*fit itq 16 0"):
        encode_run("itq", run, x, split)
    assert not run.codes_dir.exists()


def test_a_fit_record_of_another_run_is_refused(tmp_path):
    from usdh.stages.encode import encode_run

    run, x, split = _itq_run(tmp_path, seed=0)
    record = json.loads(run.fit_record.read_text())
    run.fit_record.write_text(json.dumps({**record, "seed": 1, "method": "pcah"}))
    with pytest.raises(ValueError, match=r"records method 'pcah', seed 1.*method 'itq', seed 0"):
        encode_run("itq", run, x, split)


def test_codes_of_another_length_than_their_run_are_not_scored(tmp_path):
    from usdh.evaluation import Curves, evaluate_run

    run, _, split = _itq_run(tmp_path, bits=16)
    save_npy(run.codes_dir / "query.npy", np.zeros((20, 4), np.uint8))
    save_npy(run.codes_dir / "database.npy", np.zeros((100, 4), np.uint8))
    labels = np.arange(120) % 3
    with pytest.raises(ValueError, match=r"query\.npy holds 32-bit codes.*16-bit run"):
        evaluate_run(labels, split, run, 10, Curves(), 2, {})
    assert not run.metrics.exists()


def test_encode_writes_both_code_files_or_neither(tmp_path):
    """A NaN in the database's features once left a new query.npy beside the old database.npy."""
    from usdh.stages.encode import encode_run

    run, x, split = _itq_run(tmp_path)
    encode_run("itq", run, x, split)
    before = {p.name: p.read_bytes() for p in run.codes_dir.iterdir()}
    other = x.copy()
    other[:20] += 1.0  # other query codes, were they written
    other[50, 3] = np.nan  # a database row
    with pytest.raises(ValueError, match="NaN"):
        encode_run("itq", run, other, split)
    assert {p.name: p.read_bytes() for p in run.codes_dir.iterdir()} == before


def test_evaluate_writes_its_five_files_together_or_none(tmp_path, monkeypatch):
    from usdh import evaluation
    from usdh.evaluation import Curves, evaluate_run
    from usdh.stages.encode import encode_run

    run, x, split = _itq_run(tmp_path)
    encode_run("itq", run, x, split)
    labels = np.arange(120) % 3
    evaluate_run(labels, split, run, 10, Curves(), 2, {})
    files = (run.per_query, run.pr_curve, run.p_at_n, run.map_at_k, run.metrics)
    before = [p.read_bytes() for p in files]
    calls = []

    def fails_on_the_second(path, header, rows):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error", str(path))
        path.write_text("written\n")

    monkeypatch.setattr(evaluation, "_write_csv", fails_on_the_second)
    with pytest.raises(OSError):
        evaluate_run(np.arange(120) % 4, split, run, 10, Curves(), 2, {})
    assert [p.read_bytes() for p in files] == before
    assert sorted(p.name for p in run.metrics.parent.iterdir()) == [run.metrics.name]


def test_evaluating_a_run_never_fitted_names_the_command_that_fits_it(tmp_path, monkeypatch):
    from usdh.params import load_params
    from usdh.stages.common import run_context
    from usdh.stages.evaluate import check_fitted

    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    ctx = run_context(params, "usdh", 32, 1, protocol="1k-5k-59k")
    with pytest.raises(
        FileNotFoundError,
        match=r"never fitted, or its fit stopped before encoding; run python -m usdh fit usdh 32 1 "
        r"--protocol 1k-5k-59k",
    ):
        check_fitted([ctx])
    cal = run_context(params, "lsh_uncentred", 32, 0, experiment="calibration")
    with pytest.raises(FileNotFoundError, match=r"fit lsh_uncentred 32 0 --experiment calibration"):
        check_fitted([cal])


def test_features_nothing_reads_are_refused(tmp_path):
    """``features oxford17 --experiment calibration`` computed 1,360 rows nothing read, when the
    calibration runs on CIFAR-10."""
    from usdh.params import load_params
    from usdh.stages.features import check_read

    params = load_params(ROOT / "params.yaml")
    assert params["calibration"]["dataset"] == "cifar10"
    with pytest.raises(
        ValueError,
        match=r"nothing reads calibration features of oxford17.*"
        r"runs on cifar10",
    ):
        check_read(params, "oxford17", "calibration")
    check_read(params, "cifar10", "calibration")
    check_read(params, "oxford17", "experiment")  # the main features serve every dataset


def test_damaged_features_name_the_file_and_the_stage(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "feats"
    save_features(out, rng.normal(size=(50, 8)).astype(np.float32), provenance={})
    path = out / "features.npy"
    good = path.read_bytes()
    for blob in (good[: len(good) - 64], b"", b"text"):
        path.write_bytes(blob)
        for mmap in (None, "r"):
            with pytest.raises(ValueError, match="rerun the features stage") as info:
                load_features(out, mmap_mode=mmap)
            assert str(path) in str(info.value)
    # a whole file of another shape than the provenance records
    save_npy(path, np.zeros((49, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"holds \[49, 8\].*records \[50, 8\]"):
        load_features(out)


def test_a_full_disk_is_named_with_the_file_and_nothing_partial_is_left(tmp_path, monkeypatch):
    target = tmp_path / "codes" / "query.npy"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError) as info:
        save_npy(target, np.zeros(3))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(target.parent.iterdir()) == []
    # a library that reports it its own way (torch's zip writer) on a disk that is full
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(OSError, match="No space left") as info, atomic_path(target):
        raise RuntimeError("[enforce fail at inline_container.cc:672] file write failed")
    assert info.value.filename == str(target)


def test_the_cli_says_disk_full_in_one_line(tmp_path, monkeypatch, capsys):
    from usdh.stages import split as split_stage

    def full(params, dataset):
        raise OSError(errno.ENOSPC, "No space left on device", "data/splits/x/split.json")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setattr(split_stage, "run", full)
    assert main(["split", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "usdh split: error: no space left on device while writing or reading "
        "data/splits/x/split.json; free some space and rerun"
    )


# -- archives --------------------------------------------------------------------------------------
def _small_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_class_tree(src, {"c1": 2, "c2": 2, "c3": 2})
    out = tmp_path / "flowers.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src, arcname="oxford17")
    return out


def test_a_corrupt_gzip_trailer_blames_the_archive(tmp_path):
    """Every tar member intact, the gzip CRC wrong: only reading to the end can tell."""
    path = _small_archive(tmp_path)
    names = set(read_tar(path, lambda n: True))
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF  # the CRC-32 in gzip's trailer
    path.write_bytes(bytes(blob))
    with gzip.open(path) as fh, pytest.raises(OSError):
        fh.read()  # the reference: gzip itself rejects it
    with pytest.raises(DataError, match=f"cannot read archive {path}.*corrupt"):
        read_tar(path, lambda n: True)
    assert names  # it read fine before the damage


@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_a_renamed_damaged_copy_of_a_known_archive_is_caught(tmp_path):
    copy = tmp_path / "my-flowers.tar.gz"
    blob = bytearray(OXFORD.read_bytes())
    blob[-100:-94] = b"\x00" * 6
    copy.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"checksum mismatch.*a copy of oxford17-256\.tar\.gz"):
        verify_archive(copy)
    intact = tmp_path / "renamed.tar.gz"
    shutil.copy(OXFORD, intact)
    verify_archive(intact)  # the same bytes under another name pass


def test_the_source_label_comes_from_the_pixels_not_the_file_name(tmp_path):
    small = tmp_path / "oxford17-256"  # "256" in the name, but 12 x 10 images
    write_class_tree(small, {f"c{k}": 1 for k in range(1, 18)})
    assert read_oxford17(small).source == "Oxford-17"
    big = tmp_path / "flowers"  # no "256" in the name, every shorter side 256 px
    write_class_tree(big, {f"c{k}": 1 for k in range(1, 18)}, sizes=[(300, 256), (256, 400)])
    assert read_oxford17(big).source == "Oxford-17 (256 px copy)"


# -- paths and leftovers ---------------------------------------------------------------------------
def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "deepbit"
    stale = [tmp_path / ".deepbit.k1l2.tmp", tmp_path / ".deepbit.old-1a2b3c4d"]
    for d in stale:
        d.mkdir()
        (d / "query.npy").write_bytes(b"half")
    other = tmp_path / ".other.k1l2.tmp"
    other.mkdir()
    with staged_dir(out, lambda n: True) as stage:
        (stage / "query.npy").write_bytes(b"whole")
    assert not any(d.exists() for d in stale) and other.exists()
    half = tmp_path / ".split.json.x9y8.tmp"
    half.write_text("{")
    with atomic_path(tmp_path / "split.json") as tmp:
        tmp.write_text("{}")
    assert not half.exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_every_name_that_becomes_a_path_part_is_checked(name):
    with pytest.raises(ValueError, match="cannot be used in a path"):
        layout.features_reference(name, "classification")
    with pytest.raises(ValueError, match="cannot be used in a path"):
        layout.features_reference("oxford17", name)


# -- smaller ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [2.0, True, -1, 17, "2"])
def test_a_radius_that_is_not_an_integer_in_range_is_one_clear_error(radius):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (10, 2), dtype=np.uint8)
    labels = rng.integers(0, 3, 10)
    with pytest.raises(ValueError, match=r"radius must be an integer Hamming radius in 0\.\.16"):
        evaluate_retrieval(codes, codes, labels, labels, radius=radius)


def test_constant_features_warn_that_bits_carry_nothing():
    rng = np.random.default_rng(0)
    x = np.zeros((100, 12))
    x[:, :3] = rng.normal(size=(100, 3))  # 9 constant columns: 5 of 8 directions are flat
    with pytest.warns(UserWarning, match="5 of the 8 principal directions"):
        PCAH(n_bits=8).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PCAH(n_bits=8).fit(rng.normal(size=(100, 12)))  # no warning on ordinary data


def test_finite_but_huge_features_say_what_is_wrong():
    x = np.random.default_rng(0).normal(size=(100, 12)) * 1e200
    with pytest.raises(ValueError, match=r"too large.*rescale"):
        PCAH(n_bits=8).fit(x)


# -- resume through a real, interrupted `dvc repro` ------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_an_interrupted_dvc_repro_of_a_deep_fit_resumes_and_ends_bitwise_equal(tmp_path):
    from tests.test_pipeline import dvc, project_copy, reduced_params

    params = reduced_params()
    params["experiment"].update(methods=["usdh"], protocols=["retrieval"], seeds=[0])
    variants = params["ablations"]["variants"]
    params["ablations"]["variants"] = {k: v for k, v in variants.items() if v["method"] == "usdh"}
    params["methods"]["usdh"].update(epochs=400, batch_size=8)  # long enough to interrupt
    # 8 steps an epoch: the fit is long in epochs (the interrupt lands on an event, two epochs
    # logged, not on a time) and short in work, so that the two full fits cost little anywhere
    params["datasets"]["oxford17"].update(
        train_subset=64, rotation_subset=32, augmentation_subset=32
    )
    project_copy(tmp_path, params)
    dvc(tmp_path, "init", "--no-scm", "-q")
    stage = "fit@usdh-retrieval"
    # the bank stage too: every fit stage reads its output (here a record that none is needed)
    dvc(
        tmp_path,
        "repro",
        "-s",
        "check",
        "prepare@oxford17",
        "split@oxford17",
        "features@oxford17",
        "bank@oxford17",
    )

    run = layout.Run("retrieval", "oxford17", "retrieval", "usdh", 16, 0, tmp_path)
    ckpt = run.checkpoints / CHECKPOINT_FILE
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-s", stage],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # interrupt as soon as a couple of epochs are checkpointed (the log is written after the
    # checkpoint): on a fast CPU the whole fit takes seconds, and a fixed wait once let it finish
    # (and remove its checkpoint) before the interrupt came
    log = run.checkpoints / LOG_FILE

    def epochs_logged() -> int:
        try:
            return max(0, len(log.read_text().splitlines()) - 1)
        except OSError:
            return 0

    deadline = time.monotonic() + 300
    while epochs_logged() < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the fit finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal that runs dvc repro
    proc.wait(timeout=120)
    assert ckpt.is_file()
    stopped_at = torch.load(ckpt, weights_only=True)["progress"]["epoch"]
    assert 0 < stopped_at < 400

    dvc(tmp_path, "repro", "-s", stage)
    record = json.loads(run.fit_record.read_text())
    assert record["resumed_at_epoch"] >= stopped_at  # it went on, not from epoch 0
    assert not run.checkpoints.exists() and run.train_log.is_file()
    resumed = {p: (run.codes_dir / p).read_bytes() for p in ("query.npy", "database.npy")}
    weights = np.load(run.model)

    dvc(tmp_path, "repro", "-f", "-s", stage)  # uninterrupted, from scratch
    assert "resumed_at_epoch" not in json.loads(run.fit_record.read_text())
    for part, blob in resumed.items():
        assert (run.codes_dir / part).read_bytes() == blob
    again = np.load(run.model)
    for key in weights.files:
        if key == "log_":  # the epoch log: equal but for each epoch's wall time
            cols = list(weights["log_columns_"])
            keep = [i for i, c in enumerate(cols) if c != "seconds"]
            a, b = weights[key][:, keep], again[key][:, keep]
            assert np.array_equal(a, b, equal_nan=True)
            continue
        assert np.array_equal(weights[key], again[key]), key
