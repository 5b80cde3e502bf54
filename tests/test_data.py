"""Datasets, the compact cache and the evaluation protocols (usdh.data).

Real data from ../shared/data is read where it exists (the ``slow`` tests, a few seconds each);
everything else runs on tiny copies the tests write in the real formats.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests import data_fixtures as fx
from usdh.data import (
    CIFAR10_CLASSES,
    DATASETS,
    NUSWIDE21_CLASSES,
    OXFORD17_CLASSES,
    PROTOCOLS,
    ArrayStore,
    DataError,
    DataNotFoundError,
    ImageDataset,
    Split,
    default_search_dirs,
    find_dataset,
    get_protocol,
    image_sizes,
    is_prepared,
    load_dataset,
    load_prepared,
    load_split,
    make_split,
    prepare_dataset,
    read_cifar10,
    read_imagefolder,
    read_nuswide,
    read_oxford17,
    save_split,
)
from usdh.data.cifar10 import CIFAR10_MD5

needs_cifar = pytest.mark.skipif(not fx.CIFAR_JPEG_TAR.is_file(), reason="no shared CIFAR-10 copy")
needs_oxford = pytest.mark.skipif(not fx.OXFORD_TAR.is_file(), reason="no shared Oxford-17 copy")


def pixels(ds: ImageDataset, i: int) -> np.ndarray:
    im = ds.image(i)
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    return np.asarray(im)


def label_changes(labels: np.ndarray) -> int:
    return int(np.count_nonzero(labels[1:] != labels[:-1]))


def no_temp_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# =================================================================================================
# real data (../shared/data)
# =================================================================================================
@pytest.fixture(scope="module")
def real_cifar() -> ImageDataset:
    if not fx.CIFAR_JPEG_TAR.is_file():
        pytest.skip("no shared CIFAR-10 copy")
    return load_dataset("cifar10", path=fx.CIFAR_JPEG_TAR)


@pytest.mark.slow
@needs_cifar
def test_real_cifar10_jpeg_archive(real_cifar: ImageDataset) -> None:
    ds = real_cifar
    assert len(ds) == 60000 and ds.name == "cifar10"
    assert ds.source == "CIFAR-10 (JPEG copy)"
    assert ds.classes == CIFAR10_CLASSES
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (60000,)
    assert ds.official_split is not None and ds.official_split.dtype == np.bool_
    assert ds.official_split.sum() == 10000
    assert np.array_equal(np.bincount(ds.labels[~ds.official_split]), [5000] * 10)
    assert np.array_equal(np.bincount(ds.labels[ds.official_split]), [1000] * 10)
    assert ds.origin["archive_sha256"] == (
        "eba1596704d4ee8024ed086f561a720831e080cc12127f149d5a623d4b8c53fd"
    )
    assert ds.image_shape == (32, 32, 3)
    for i in (0, 49999, 50000, 59999):
        assert pixels(ds, i).shape == (32, 32, 3)
    # the file a label came from says the same class and split
    for i in (0, 12345, 50000, 59999):
        split, cls, _ = ds.image_id(i).split("/")
        assert CIFAR10_CLASSES.index(cls) == ds.labels[i]
        assert (split == "test") == ds.official_split[i]


@pytest.mark.slow
@needs_cifar
def test_real_cifar10_prepare_and_protocols(real_cifar: ImageDataset, tmp_path: Path) -> None:
    summary = prepare_dataset(real_cifar, tmp_path / "cifar10", progress=False)
    assert summary["storage"] == "array" and summary["n"] == 60000
    ds = load_prepared(tmp_path / "cifar10")
    assert ds.array is not None and ds.array.shape == (60000, 32, 32, 3)
    assert ds.source == "CIFAR-10 (JPEG copy)"
    assert ds.origin["archive"] == "cifar10-jpeg.tar.gz"
    for i in (0, 777, 59999):
        assert np.array_equal(pixels(ds, i), pixels(real_cifar, i))
    assert np.array_equal(ds.labels, real_cifar.labels)

    split = make_split(ds, "deepbit", seed=0, train_subset=5000)
    assert split.sizes == {"query": 10000, "database": 50000, "train": 50000, "train_subset": 5000}
    assert split.topk == 1000
    assert np.array_equal(np.bincount(ds.labels[split["query"]]), [1000] * 10)
    assert np.array_equal(np.bincount(ds.labels[split["database"]]), [5000] * 10)
    assert (
        ds.official_split[split["query"]].all() and not ds.official_split[split["database"]].any()
    )
    # the JPEG copy is stored class by class: the split must not be
    assert label_changes(ds.labels[split["database"]]) > 40000

    other = make_split(ds, "1k-5k-59k", seed=0)
    assert other.sizes == {"query": 1000, "database": 59000, "train": 5000}
    assert np.array_equal(np.bincount(ds.labels[other["query"]]), [100] * 10)
    assert np.array_equal(np.bincount(ds.labels[other["train"]]), [500] * 10)


@pytest.mark.slow
@needs_oxford
def test_real_oxford17_archive(tmp_path: Path) -> None:
    ds = load_dataset("oxford17", path=fx.OXFORD_TAR)
    assert len(ds) == 1360 and ds.classes == OXFORD17_CLASSES
    assert ds.source == "Oxford-17 (256 px copy)"
    assert np.array_equal(ds.class_counts(), [80] * 17)
    assert ds.official_split is None and ds.image_shape is None
    for i in (0, 500, 1359):
        name = ds.image_id(i)  # oxford17/cK/image_NNNN.jpg: class = (N - 1) // 80
        number = int(name.rsplit("_", 1)[1].split(".")[0])
        assert (number - 1) // 80 == ds.labels[i]
        assert min(ds.image(i).size) == 256
    split = make_split(ds, "retrieval", seed=0)
    assert split.sizes == {"query": 340, "database": 1020, "train": 680, "val": 340}
    summary = prepare_dataset(ds, tmp_path / "ox", progress=False)
    assert summary["storage"] == "encoded"
    back = load_prepared(tmp_path / "ox", verify=True)
    assert back.source == ds.source and np.array_equal(back.labels, ds.labels)
    assert np.array_equal(pixels(back, 1000), pixels(ds, 1000))
    assert image_sizes(tmp_path / "ox").shape == (1360, 2)


@needs_cifar
@needs_oxford
def test_search_finds_the_shared_copies() -> None:
    """With no path, the default search reaches ../shared/data from the project root."""
    dirs = [p.resolve() for p in default_search_dirs("cifar10") if p.exists()]
    assert fx.SHARED.resolve() in dirs
    assert find_dataset("cifar10").exists() and find_dataset("oxford17").exists()


# =================================================================================================
# CIFAR-10 from built copies
# =================================================================================================
def test_cifar10_canonical_folder(tmp_path: Path) -> None:
    want = fx.write_cifar_batches(tmp_path, per_batch=7)
    ds = read_cifar10(tmp_path)  # the folder holding cifar-10-batches-py/
    assert ds.source == "CIFAR-10" and len(ds) == 42 and ds.classes == CIFAR10_CLASSES
    assert np.array_equal(ds.labels, want["labels"])
    assert np.array_equal(ds.official_split, want["is_test"])
    assert np.array_equal(ds.array, want["images"])
    assert np.array_equal(pixels(ds, 40), want["images"][40])
    assert ds.image_id(0) == "data_batch_1:img_data_batch_1_0.png"
    same = read_cifar10(tmp_path / "cifar-10-batches-py")
    assert np.array_equal(same.array, ds.array)
    assert load_dataset("cifar10", search_dirs=[tmp_path]).source == "CIFAR-10"


def test_cifar10_canonical_archive_and_md5(tmp_path: Path) -> None:
    want = fx.write_cifar_batches(tmp_path / "src", per_batch=5)
    archive = fx.make_tar(tmp_path / "src", tmp_path / "my-cifar.tar.gz")
    ds = read_cifar10(archive)
    assert ds.source == "CIFAR-10" and ds.origin["kind"] == "archive"
    assert np.array_equal(ds.array, want["images"])
    assert ds.origin["archive_sha256"] and len(ds.origin["archive_sha256"]) == 64
    # under the official name the official md5 is checked: a fake one fails, by name
    official = tmp_path / "dl" / "cifar-10-python.tar.gz"
    official.parent.mkdir()
    official.write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match=rf"checksum mismatch.*md5.*expected {CIFAR10_MD5}"):
        read_cifar10(official)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", search_dirs=[official.parent])


def test_cifar10_pickle_may_only_hold_arrays(tmp_path: Path) -> None:
    fx.write_cifar_batches(tmp_path, per_batch=2)

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to load builtins.print"):
        read_cifar10(tmp_path)


def test_cifar10_missing_batch(tmp_path: Path) -> None:
    fx.write_cifar_batches(tmp_path, per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"lacks CIFAR-10 batch file.*test_batch"):
        read_cifar10(tmp_path)


def test_cifar10_jpeg_folder_and_archive(tmp_path: Path) -> None:
    root = fx.write_cifar_jpeg_tree(tmp_path / "cifar10", train=3, test=2)
    ds = read_cifar10(root)
    assert ds.source == "CIFAR-10 (JPEG copy)" and len(ds) == 50
    assert ds.official_split.sum() == 20 and not ds.official_split[:30].any()
    assert list(ds.labels[:6]) == [0, 0, 0, 1, 1, 1]
    assert ds.image_id(3) == "train/automobile/0000.jpg"
    # the same copy packed in a tar (under a top folder) reads the same
    archive = fx.make_tar(root, tmp_path / "cifar10-copy.tar.gz", arcname="CIFAR-10-images")
    packed = read_cifar10(archive)
    assert packed.origin["kind"] == "archive"
    assert np.array_equal(packed.labels, ds.labels)
    assert np.array_equal(packed.official_split, ds.official_split)
    assert all(np.array_equal(pixels(packed, i), pixels(ds, i)) for i in (0, 25, 49))
    assert load_dataset("cifar10", search_dirs=[tmp_path]).source == "CIFAR-10 (JPEG copy)"


def test_cifar10_prefers_the_canonical_copy(tmp_path: Path) -> None:
    fx.write_cifar_jpeg_tree(tmp_path / "a" / "cifar10", train=1, test=1)
    fx.write_cifar_batches(tmp_path / "b", per_batch=2)
    ds = load_dataset("cifar10", search_dirs=[tmp_path / "a", tmp_path / "b"])
    assert ds.source == "CIFAR-10"


def test_cifar10_jpeg_copy_missing_class(tmp_path: Path) -> None:
    root = fx.write_cifar_jpeg_tree(tmp_path / "c", train=1, test=1)
    for f in (root / "test" / "frog").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"test/frog.*missing or hold no images"):
        read_cifar10(root)


def test_cifar10_download_is_attempted_and_failure_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def offline(root: str, train: bool, download: bool) -> None:
        calls.append((root, download))
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake_tv = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=offline))
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", search_dirs=[tmp_path], download=True)
    assert calls == [(str(tmp_path), True)]
    msg = str(err.value)
    assert "downloading CIFAR-10" in msg and "name resolution" in msg
    assert "cifar-10-python.tar.gz" in msg and "class-folder copy" in msg


def test_cifar10_download_success_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(root: str, train: bool, download: bool) -> None:
        fx.write_cifar_batches(Path(root), per_batch=3)  # what torchvision unpacks

    fake_tv = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=fake_download))
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    ds = load_dataset("cifar10", search_dirs=[tmp_path / "raw"], download=True)
    assert ds.source == "CIFAR-10" and len(ds) == 18
    assert (tmp_path / "raw" / "cifar-10-batches-py" / "data_batch_1").is_file()


# =================================================================================================
# Oxford-17, NUS-WIDE, image folders from built copies
# =================================================================================================
def test_oxford17_class_folders_and_original_layout(tmp_path: Path) -> None:
    counts = {f"c{k}": 2 for k in range(1, 18)}
    fx.write_class_tree(tmp_path / "copy" / "oxford17", counts)
    ds = load_dataset("oxford17", path=tmp_path / "copy")
    assert len(ds) == 34 and ds.source == "Oxford-17" and ds.classes == OXFORD17_CLASSES
    assert np.array_equal(ds.labels, np.repeat(np.arange(17), 2))  # c2 after c1, c10 after c9
    assert ds.image_id(2).startswith("c2/")
    # the original 17flowers layout: jpg/image_NNNN.jpg, class (N - 1) // 80
    rng = np.random.default_rng(0)
    for n in (1, 80, 81, 1360):
        fx.write_jpeg(tmp_path / "orig" / "jpg" / f"image_{n:04d}.jpg", rng)
    with pytest.raises(DataError, match=r"c3 \(lily of the valley\).*missing"):
        read_oxford17(tmp_path / "orig")


def test_oxford17_original_layout_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k in range(17):
        fx.write_jpeg(tmp_path / "jpg" / f"image_{k * 80 + 1:04d}.jpg", rng)
        fx.write_jpeg(tmp_path / "jpg" / f"image_{k * 80 + 80:04d}.jpg", rng)
    (tmp_path / "jpg" / "loop").symlink_to(tmp_path)  # a symlink cycle is walked once
    ds = read_oxford17(tmp_path)
    assert np.array_equal(ds.labels, np.repeat(np.arange(17), 2))


def test_nuswide_fixture(tmp_path: Path) -> None:
    labels = fx.write_nuswide(tmp_path / "nuswide", n=40)
    ds = load_dataset("nuswide", search_dirs=[tmp_path])
    assert ds.multilabel and ds.labels.dtype == np.uint8 and ds.labels.shape == (40, 21)
    assert np.array_equal(ds.labels, labels)
    assert ds.classes == NUSWIDE21_CLASSES and ds.source == "NUS-WIDE-21"
    assert ds.official_split is None
    assert pixels(ds, 3).shape == (8 + 3 % 3, 8 + 3 % 5, 3)
    assert np.array_equal(ds.class_counts(), labels.sum(axis=0))


def test_nuswide_variants(tmp_path: Path) -> None:
    labels = fx.write_nuswide(
        tmp_path / "a", n=12, names=("img_tc21.txt", "targets_onehot_tc21.txt")
    )
    assert np.array_equal(read_nuswide(tmp_path / "a").labels, labels)
    # one file "path l1 ... l21", image paths relative to images/
    b = tmp_path / "b"
    labels = fx.write_nuswide(b, n=10, names=("x.txt", "y.txt"))
    rows = zip(
        (b / "x.txt").read_text().split(), (b / "y.txt").read_text().splitlines(), strict=True
    )
    (b / "all.txt").write_text("".join(f"{p.removeprefix('images/')} {r}\n" for p, r in rows))
    ds = read_nuswide(b / "all.txt")  # the list itself as the path
    assert np.array_equal(ds.labels, labels) and ds.image_id(0) == "00000.jpg"
    # concept names from classes.txt; other concept counts need names
    (b / "classes.txt").write_text("\n".join(f"concept{k}" for k in range(21)))
    assert read_nuswide(b, image_list="x.txt", label_file="y.txt").classes[0] == "concept0"


def test_nuswide_bad_inputs(tmp_path: Path) -> None:
    root = tmp_path / "nus"
    fx.write_nuswide(root, n=8)
    with pytest.raises(DataNotFoundError, match="holds no NUS-WIDE image list"):
        read_nuswide(tmp_path)
    lines = (root / "labels.txt").read_text().splitlines()
    (root / "labels.txt").write_text("\n".join(lines[:-1]))
    with pytest.raises(DataError, match=r"lists 8 images but .*labels.txt has 7 label rows"):
        read_nuswide(root)
    (root / "labels.txt").write_text("\n".join([*lines[:-1], lines[-1].replace("0", "2", 1)]))
    with pytest.raises(DataError, match="line 8 holds values other than 0 and 1"):
        read_nuswide(root)
    (root / "labels.txt").write_text("\n".join(lines))
    listed = (root / "images.txt").read_text()
    (root / "images.txt").write_text(listed.replace("images/", ""))  # relative to images/
    assert read_nuswide(root).image_id(0) == "00000.jpg"
    (root / "images.txt").write_text(listed.replace("images/", "pics/"))
    with pytest.raises(DataNotFoundError, match="pass image_root="):
        read_nuswide(root)
    (root / "pics").symlink_to(root / "images")
    assert len(read_nuswide(root, image_root=root)) == 8


def test_imagefolder_folder_and_archive(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "pets", {"dog": 3, "cat": 2, "bird": 4})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("ignored")
    ds = read_imagefolder(root)
    assert ds.classes == ["bird", "cat", "dog"] and len(ds) == 9
    assert np.array_equal(ds.labels, [0, 0, 0, 0, 1, 1, 2, 2, 2])
    assert ds.source == "image folder pets" and not ds.multilabel
    packed = load_dataset("imagefolder", path=fx.make_tar(root, tmp_path / "p.tar.gz", "pets"))
    assert packed.classes == ds.classes and np.array_equal(packed.labels, ds.labels)
    assert np.array_equal(pixels(packed, 5), pixels(ds, 5))


def test_imagefolder_bad_inputs(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"a": 2, "b": 2})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder 'empty' .* holds no images"):
        read_imagefolder(root)
    (root / "empty").rmdir()
    bad = root / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    ds = read_imagefolder(root)
    i = [ds.image_id(k) for k in range(len(ds))].index("b/broken.jpg")
    with pytest.raises(DataError, match=r"cannot read image .*b/broken\.jpg"):
        ds.image(i)
    with pytest.raises(DataError, match=r"cannot read image .*b/broken\.jpg"):
        prepare_dataset(ds, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and no_temp_left(tmp_path)
    with pytest.raises(DataError, match="holds no class folders"):
        read_imagefolder(root / "a")


# =================================================================================================
# finding data, and the errors when it is missing or broken
# =================================================================================================
def test_nothing_found_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", search_dirs=[tmp_path / "raw", tmp_path / "shared"])
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    for part in (
        "cifar10 not found",
        "Looked in:",
        str(tmp_path / "raw"),
        "(does not exist)",
        "download=True",
        "cifar-10-python.tar.gz",
        CIFAR10_MD5,
        "class-folder copy",
        "path argument",
    ):
        assert part in msg
    with pytest.raises(DataNotFoundError, match=r"(?s)oxford17 not found.*17flowers\.tgz"):
        load_dataset("oxford17", search_dirs=[tmp_path])
    with pytest.raises(DataNotFoundError, match="cannot be downloaded"):
        load_dataset("oxford17", search_dirs=[tmp_path], download=True)
    with pytest.raises(DataNotFoundError, match="give its path"):
        load_dataset("imagefolder")
    with pytest.raises(DataNotFoundError, match=r"given path .* does not exist"):
        load_dataset("cifar10", path=tmp_path / "nope")


def test_unknown_dataset_name_lists_known() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known datasets: cifar10, "):
        load_dataset("mnist")
    assert set(DATASETS) == {"cifar10", "fashion_mnist", "oxford17", "nuswide", "imagefolder"}
    assert default_search_dirs("CIFAR-10")[-1].name == "data"  # aliases resolve


def test_corrupt_archive(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"a": 3, "b": 3})
    good = fx.make_tar(root, tmp_path / "good.tar.gz")
    truncated = tmp_path / "bad.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        DataError, match=r"cannot read archive .*bad\.tar\.gz.*corrupt or truncated"
    ):
        read_imagefolder(truncated)
    garbage = tmp_path / "junk.tar.gz"
    garbage.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_imagefolder(garbage)


def test_checksum_mismatch(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"a": 2})
    archive = fx.make_tar(root, tmp_path / "data.tar.gz")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  data.tar.gz\n")
    with pytest.raises(DataError, match=r"checksum mismatch .*data\.tar\.gz.*sha256sum"):
        read_imagefolder(archive)
    # a known archive name with other contents is caught as well
    known = tmp_path / "k" / "oxford17-256.tar.gz"
    known.parent.mkdir()
    known.write_bytes(archive.read_bytes())
    with pytest.raises(DataError, match="checksum mismatch"):
        read_oxford17(known)


# =================================================================================================
# the compact cache
# =================================================================================================
def test_prepare_array_roundtrip(tmp_path: Path) -> None:
    want = fx.write_cifar_batches(tmp_path / "raw", per_batch=4)
    archive = fx.make_tar(tmp_path / "raw", tmp_path / "c.tar.gz")
    ds = read_cifar10(archive)
    summary = prepare_dataset(ds, tmp_path / "prep", progress=False)
    assert summary["storage"] == "array" and summary["seconds"] >= 0
    assert is_prepared(tmp_path / "prep") and no_temp_left(tmp_path)
    meta = json.loads((tmp_path / "prep" / "meta.json").read_text())
    assert meta["name"] == "cifar10" and meta["source"] == "CIFAR-10" and meta["n"] == 24
    assert meta["classes"] == CIFAR10_CLASSES and meta["storage"] == "array"
    assert meta["archive_sha256"] == ds.origin["archive_sha256"]
    assert np.load(tmp_path / "prep" / "images.npy").shape == (24, 32, 32, 3)
    back = load_prepared(tmp_path / "prep", verify=True)
    assert np.array_equal(back.array, want["images"])
    assert np.array_equal(back.labels, want["labels"])
    assert np.array_equal(back.official_split, want["is_test"])
    assert back.source == "CIFAR-10" and back.image_shape == (32, 32, 3)
    assert np.array_equal(pixels(back, 9), want["images"][9])
    # load_dataset accepts a prepared folder too
    assert len(load_dataset("cifar10", path=tmp_path / "prep")) == 24
    # pickles small (workers re-map the file) and works after unpickling
    clone = pickle.loads(pickle.dumps(back))
    assert len(pickle.dumps(back)) < 20000
    assert np.array_equal(pixels(clone, 9), want["images"][9])


def test_prepare_jpeg_copy_decodes_to_array(tmp_path: Path) -> None:
    root = fx.write_cifar_jpeg_tree(tmp_path / "c", train=2, test=1)
    ds = read_cifar10(root)
    prepare_dataset(ds, tmp_path / "prep", progress=False)
    back = load_prepared(tmp_path / "prep")
    assert back.array is not None and back.source == "CIFAR-10 (JPEG copy)"
    assert all(np.array_equal(pixels(back, i), pixels(ds, i)) for i in range(len(ds)))


def test_prepare_encoded_roundtrip(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"x": 3, "y": 2})
    Image.new("L", (7, 5), 128).save(root / "y" / "gray.png")  # any mode comes back RGB
    ds = read_imagefolder(root)
    prepare_dataset(ds, tmp_path / "prep", progress=False)
    back = load_prepared(tmp_path / "prep", verify=True)
    assert back.store.raw(0) == (root / ds.image_id(0)).read_bytes()  # the files, byte for byte
    assert all(np.array_equal(pixels(back, i), pixels(ds, i)) for i in range(len(ds)))
    sizes = image_sizes(tmp_path / "prep")
    assert sizes is not None and tuple(sizes[0]) == ds.image(0).size
    gray = [back.image_id(i) for i in range(len(back))].index("y/gray.png")
    assert pixels(back, gray).shape == (5, 7, 3)
    clone = pickle.loads(pickle.dumps(back))
    assert np.array_equal(pixels(clone, 2), pixels(ds, 2))


def test_prepare_storage_choices(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"x": 3}, sizes=[(5, 5), (6, 5)])
    ds = read_imagefolder(root)
    with pytest.raises(DataError, match="storage='array' needs one size"):
        prepare_dataset(ds, tmp_path / "a", storage="array", progress=False)
    with pytest.raises(DataError, match="storage must be one of"):
        prepare_dataset(ds, tmp_path / "a", storage="zip")
    # an array dataset can be stored encoded (PNG, lossless)
    arr = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 3), dtype=np.uint8)
    small = ImageDataset("toy", "toy", ["a", "b"], np.array([0, 1, 0, 1]), ArrayStore(arr))
    prepare_dataset(small, tmp_path / "png", storage="encoded", progress=False)
    assert np.array_equal(pixels(load_prepared(tmp_path / "png"), 3), arr[3])


def test_prepare_is_atomic_and_careful(tmp_path: Path) -> None:
    root = fx.write_class_tree(tmp_path / "f", {"x": 2, "y": 2})
    ds = read_imagefolder(root)
    out = tmp_path / "prep"
    prepare_dataset(ds, out, progress=False)
    first = (out / "meta.json").read_text()
    prepare_dataset(ds, out, progress=False)  # replaced as a whole
    assert (out / "meta.json").read_text() == first and no_temp_left(tmp_path)
    (out / "mine.txt").write_text("someone else's")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        prepare_dataset(ds, out, progress=False)
    (out / "mine.txt").unlink()
    # a file that does not match meta.json is caught
    (out / "labels.npy").write_bytes(b"\x00")
    with pytest.raises(DataError, match=r"labels.npy is missing or not the file"):
        load_prepared(out)
    (out / "meta.json").unlink()
    with pytest.raises(DataNotFoundError, match="not a prepared dataset"):
        load_prepared(out)


# =================================================================================================
# protocols
# =================================================================================================
def test_protocol_registry() -> None:
    assert PROTOCOLS["deepbit"].topk == 1000 and PROTOCOLS["deepbit"].dataset == "cifar10"
    assert PROTOCOLS["1k-5k-59k"].topk is None
    assert PROTOCOLS["nuswide21"].topk == 5000 and PROTOCOLS["nuswide21"].dataset == "nuswide"
    assert PROTOCOLS["retrieval"].dataset == "oxford17"
    assert PROTOCOLS["classification"].kind == "classification"
    assert all(p.description for p in PROTOCOLS.values())
    with pytest.raises(KeyError, match="known protocols: deepbit, 1k-5k-59k"):
        PROTOCOLS["hashnet"]
    with pytest.raises(DataError, match="unknown protocol 'hashnet'; known protocols"):
        get_protocol("hashnet")


def test_deepbit_split() -> None:
    ds = fx.synthetic_cifar()
    split = make_split(ds)  # deepbit is CIFAR-10's default
    assert isinstance(split, Split) and split.protocol == "deepbit" and split.topk == 1000
    assert split.sizes == {"query": 10000, "database": 50000, "train": 50000}
    assert all(v.dtype == np.int64 for v in split.values())
    q, db = split["query"], split["database"]
    assert np.array_equal(np.sort(q), np.arange(50000, 60000))
    assert np.array_equal(np.sort(db), np.arange(50000))
    assert np.array_equal(split["train"], db)
    # stored in a random order, never class by class (the dataset itself is grouped by class)
    assert label_changes(ds.labels[db]) > 0.85 * db.size
    assert label_changes(ds.labels[q]) > 0.85 * q.size
    assert not np.all(np.diff(db) > 0)


def test_1k_5k_59k_split() -> None:
    ds = fx.synthetic_cifar()
    split = make_split(ds, "1k-5k-59k", seed=3)
    q, db, tr = split["query"], split["database"], split["train"]
    assert split.sizes == {"query": 1000, "database": 59000, "train": 5000}
    assert np.array_equal(np.bincount(ds.labels[q], minlength=10), [100] * 10)
    assert np.array_equal(np.bincount(ds.labels[tr], minlength=10), [500] * 10)
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == 60000
    assert np.isin(tr, db).all() and np.unique(tr).size == 5000
    assert label_changes(ds.labels[db]) > 0.85 * db.size
    assert label_changes(ds.labels[q]) > 0.85 * q.size
    assert ds.official_split[q].any() and (~ds.official_split[q]).any()  # drawn from all 60,000


@pytest.mark.parametrize("protocol", ["deepbit", "1k-5k-59k"])
def test_splits_are_deterministic(protocol: str) -> None:
    ds = fx.synthetic_cifar(grouped=False)
    a = make_split(ds, protocol, seed=7, train_subset=100)
    b = make_split(ds, protocol, seed=7, train_subset=100)
    c = make_split(ds, protocol, seed=8, train_subset=100)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert np.array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])


def test_train_subset() -> None:
    ds = fx.synthetic_cifar()
    plain = make_split(ds, "deepbit", seed=0)
    split = make_split(ds, "deepbit", seed=0, train_subset=500)
    sub = split["train_subset"]
    assert sub.dtype == np.int64 and sub.size == 500 and np.unique(sub).size == 500
    assert np.isin(sub, split["train"]).all()
    for k in plain:  # asking for a subset changes nothing else
        assert np.array_equal(plain[k], split[k])
    assert label_changes(ds.labels[sub]) > 0.8 * sub.size
    with pytest.raises(DataError, match=r"train_subset=50001 but there are 50000 training images"):
        make_split(ds, "deepbit", train_subset=50001)
    with pytest.raises(DataError, match="train_subset must be a count or a share"):
        make_split(ds, "deepbit", train_subset="half")
    with pytest.raises(DataError, match=r"share of the pool must lie in \(0, 1\]"):
        make_split(ds, "deepbit", train_subset=1.5)


def test_rotation_subset_and_validation_split() -> None:
    ds = fx.synthetic_cifar()
    plain = make_split(ds, "deepbit", seed=0)
    split = make_split(ds, "deepbit", seed=0, rotation_subset=300, validation_queries=1000)
    for k in plain:  # the extra parts change nothing else
        assert np.array_equal(plain[k], split[k])
    rot, vq, vdb = split["rotation_subset"], split["val_query"], split["val_database"]
    assert rot.size == np.unique(rot).size == 300 and np.isin(rot, split["train"]).all()
    # the validation split mirrors the protocol: queries and database from the training pool,
    # together exactly the pool, disjoint, and nothing of the protocol's queries
    assert vq.size == 1000 and vdb.size == split["train"].size - 1000
    assert np.array_equal(np.sort(np.concatenate([vq, vdb])), np.sort(split["train"]))
    assert not np.isin(vq, vdb).any() and not np.isin(vq, split["query"]).any()
    # drawn from the training subset when there is one: every method trains on the same images
    sub = make_split(ds, "deepbit", seed=0, train_subset=2000, rotation_subset=100,
                     validation_queries=200)  # fmt: skip
    assert np.isin(sub["rotation_subset"], sub["train_subset"]).all()
    assert np.isin(sub["val_query"], sub["train_subset"]).all() and sub["val_database"].size == 1800
    with pytest.raises(DataError, match="leaves no training image"):
        make_split(ds, "deepbit", train_subset=10, validation_queries=10)
    # a share of the pool draws exactly what its rounded count draws (the same stream)
    share = make_split(ds, "deepbit", seed=0, rotation_subset=0.1)
    count = make_split(ds, "deepbit", seed=0, rotation_subset=round(0.1 * split["train"].size))
    assert np.array_equal(share["rotation_subset"], count["rotation_subset"])


def test_nuswide21_split() -> None:
    ds = fx.synthetic_nuswide(n=30000)
    split = make_split(ds, seed=0, train_subset=1000)
    assert split.protocol == "nuswide21" and split.topk == 5000
    q, db, tr = split["query"], split["database"], split["train"]
    assert q.size == 2100 and np.unique(q).size == 2100
    assert tr.size == 10500 and np.unique(tr).size == 10500
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == len(ds)
    assert np.intersect1d(q, tr).size == 0 and np.isin(tr, db).all()
    assert (ds.labels[q].sum(axis=0) >= 100).all()  # each concept contributed 100 queries
    assert (ds.labels[tr].sum(axis=0) >= 500).all()
    first = np.argmax(ds.labels[db], axis=1)  # not stored concept by concept
    assert label_changes(first) > 0.5 * db.size
    again = make_split(ds, seed=0, train_subset=1000)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_nuswide21_on_the_tiny_fixture(tmp_path: Path) -> None:
    fx.write_nuswide(tmp_path / "nus", n=120, density=0.4)
    ds = read_nuswide(tmp_path / "nus")
    with pytest.raises(DataError, match=r"concept '.*' .* takes 100 query \+ 500 train"):
        make_split(ds, "nuswide21")
    split = make_split(ds, "nuswide21", n_query_per_class=1, n_train_per_class=2)
    assert split.sizes["query"] == 21 and split.sizes["train"] == 42
    assert split.sizes["database"] == 120 - 21
    assert split.params == {"n_query_per_class": 1, "n_train_per_class": 2}
    save_split(
        make_split(ds, "nuswide21", n_query_per_class=np.int64(1), n_train_per_class=0),
        tmp_path / "s",
    )
    assert (
        json.loads((tmp_path / "s" / "split.json").read_text())["params"]["n_query_per_class"] == 1
    )


def test_oxford17_protocols() -> None:
    ds = fx.synthetic("oxford17", np.repeat(np.arange(17), 80), OXFORD17_CLASSES)
    r = make_split(ds, seed=5)
    c = make_split(ds, "classification", seed=5)
    assert r.protocol == "retrieval"
    assert r.sizes == {"query": 340, "database": 1020, "train": 680, "val": 340}
    assert c.sizes == {"train": 680, "val": 340, "test": 340}
    for part, per_class in (("train", 40), ("val", 20), ("test", 20)):
        assert np.array_equal(np.bincount(ds.labels[c[part]]), [per_class] * 17)
    assert np.array_equal(r["query"], c["test"]) and np.array_equal(r["train"], c["train"])
    assert np.array_equal(np.sort(r["database"]), np.sort(np.concatenate([c["train"], c["val"]])))
    assert np.intersect1d(r["query"], r["database"]).size == 0
    assert label_changes(ds.labels[r["database"]]) > 0.85 * 1020
    with pytest.raises(DataError, match=r"class 'daffodil' .* has 80 images.*40 train \+ 30 val"):
        make_split(ds, "classification", n_val=30)


def test_per_class_protocol() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    ds = fx.synthetic("imagefolder", labels)
    split = make_split(ds, seed=0)  # per-class: 10% query, 50% train
    assert split.protocol == "per-class"
    assert np.array_equal(np.bincount(labels[split["query"]]), [1, 2, 3])
    assert np.array_equal(np.bincount(labels[split["train"]]), [5, 10, 15])
    assert split["val"].size == 0
    assert np.intersect1d(split["query"], split["database"]).size == 0
    assert np.union1d(split["query"], split["database"]).size == 60
    counts = make_split(ds, "per-class", query=2, train=3, val=1)
    assert np.array_equal(np.bincount(labels[counts["val"]]), [1, 1, 1])
    assert np.intersect1d(counts["val"], counts["train"]).size == 0
    with pytest.raises(DataError, match=r"class 'c0' .* has 10 images.*8 query \+ 3 train"):
        make_split(ds, "per-class", query=8, train=3)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    query=st.integers(0, 5),
    train=st.integers(0, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_per_class_split_properties(sizes: list[int], query: int, train: int, seed: int) -> None:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    ds = fx.synthetic("imagefolder", np.random.default_rng(0).permutation(labels))
    if query == 0:
        with pytest.raises(DataError):
            make_split(ds, "per-class", seed=seed, query=query, train=train)
        return
    if query + train > min(sizes):
        with pytest.raises(DataError, match="lower the per-class counts"):
            make_split(ds, "per-class", seed=seed, query=query, train=train)
        return
    split = make_split(ds, "per-class", seed=seed, query=query, train=train)
    assert np.array_equal(np.bincount(ds.labels[split["query"]]), [query] * len(sizes))
    assert split["train"].size == train * len(sizes)
    assert np.intersect1d(split["query"], split["database"]).size == 0
    assert np.union1d(split["query"], split["database"]).size == len(ds)
    assert np.isin(split["train"], split["database"]).all()


def test_split_bad_inputs() -> None:
    cifar = fx.synthetic_cifar()
    with pytest.raises(
        DataError, match=r"protocol 'nuswide21' is for nuswide, not cifar10.*deepbit"
    ):
        make_split(cifar, "nuswide21")
    with pytest.raises(DataError, match=r"unknown parameter\(s\) n_query for protocol '1k-5k-59k'"):
        make_split(cifar, "1k-5k-59k", n_query=5)
    with pytest.raises(DataError, match="seed must be a non-negative integer"):
        make_split(cifar, seed=-1)
    with pytest.raises(DataError, match="needs the official train/test split"):
        make_split(fx.synthetic("cifar10", np.arange(10).repeat(3), CIFAR10_CLASSES), "deepbit")
    nus = fx.synthetic_nuswide(n=100)
    with pytest.raises(DataError, match="needs single-label data"):
        make_split(nus, "per-class")
    empty = ImageDataset(
        "imagefolder",
        "x",
        ["a", "b"],
        np.zeros(5, np.int64),
        ArrayStore(np.zeros((5, 1, 1, 3), np.uint8)),
    )
    with pytest.raises(DataError, match="class 'b' of imagefolder has no images"):
        make_split(empty)


def test_save_and_load_split(tmp_path: Path) -> None:
    ds = fx.synthetic_cifar()
    split = make_split(ds, "1k-5k-59k", seed=2, train_subset=300)
    out = save_split(split, tmp_path / "splits" / "1k-5k-59k")
    assert no_temp_left(tmp_path / "splits")
    info = json.loads((out / "split.json").read_text())
    assert info["protocol"] == "1k-5k-59k" and info["seed"] == 2 and info["topk"] is None
    assert info["sizes"] == {"query": 1000, "database": 59000, "train": 5000, "train_subset": 300}
    assert sorted(p.name for p in out.iterdir()) == [
        "database.npy",
        "query.npy",
        "split.json",
        "train.npy",
        "train_subset.npy",
    ]
    back = load_split(out, ds)
    assert back.protocol == "1k-5k-59k" and back.seed == 2 and back.sizes == split.sizes
    assert all(np.array_equal(back[k], split[k]) for k in split)
    # a split drawn on another order of the data is refused
    with pytest.raises(DataError, match="another copy or order"):
        load_split(out, fx.synthetic_cifar(grouped=False))
    # a plain mapping needs its protocol and seed
    with pytest.raises(DataError, match="needs protocol= and seed="):
        save_split({"query": np.arange(3)}, tmp_path / "plain")
    save_split({"query": np.arange(3)}, tmp_path / "plain", protocol="deepbit", seed=0)
    assert load_split(tmp_path / "plain").topk == 1000
    with pytest.raises(DataNotFoundError, match="holds no split"):
        load_split(tmp_path)
    (out / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        save_split(split, out)


def test_dataset_validation() -> None:
    store = ArrayStore(np.zeros((3, 2, 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in 0..1"):
        ImageDataset("t", "t", ["a", "b"], np.array([0, 1, 2]), store)
    with pytest.raises(DataError, match="2 labels for 3 images"):
        ImageDataset("t", "t", ["a", "b"], np.array([0, 1]), store)
    with pytest.raises(DataError, match="only 0 and 1"):
        ImageDataset("t", "t", ["a", "b"], np.array([[0, 2], [1, 0], [0, 0]]), store)
    ds = ImageDataset("t", "t", ["a", "b"], np.array([0, 1, 1]), store)
    with pytest.raises(IndexError, match="out of range"):
        ds.image(3)
    assert pixels(ds, np.int64(2)).shape == (2, 2, 3)
