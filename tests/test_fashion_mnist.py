"""Fashion-MNIST (usdh.data.fashion_mnist): the IDX reader, its checks, the download, the protocol.

The real archive in ../shared/data is read where it exists (the ``slow`` tests, a second or two
each); everything else runs on small IDX files the tests write, and the download never touches
the network: the fetch function is replaced by one serving files from the archive (or damaged
ones).
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import data_fixtures as fx
from usdh.data import (
    DATASETS,
    DEFAULT_PROTOCOLS,
    FASHION_MNIST_CLASSES,
    PROTOCOLS,
    ArrayStore,
    DataError,
    DataNotFoundError,
    ImageDataset,
    canonical_name,
    default_search_dirs,
    download_fashion_mnist,
    find_dataset,
    load_dataset,
    load_prepared,
    make_split,
    prepare_dataset,
    read_fashion_mnist,
)
from usdh.data import fashion_mnist as fm
from usdh.data._files import KNOWN_SHA256, read_tar

FMNIST_TAR = fx.SHARED / "fashion-mnist.tar"
needs_fmnist = pytest.mark.skipif(not FMNIST_TAR.is_file(), reason="no shared Fashion-MNIST copy")

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = fm.FILES
# the first labels of each split, as published independently of this copy (e.g. Keras' and the R
# keras package's tutorials print them): image 0 of the training set is an ankle boot
FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4]
FIRST_TEST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def rgb(ds: ImageDataset, i: int) -> np.ndarray:
    im = ds.image(i)
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    return np.asarray(im)


# -- small IDX copies ------------------------------------------------------------------------------
def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """An unsigned-byte IDX file of ``arr`` (magic 0x0000080<ndim> unless given)."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 + arr.ndim if magic is None else magic
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return magic.to_bytes(4, "big") + dims + arr.tobytes()


def write_copy(
    folder: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, gz: bool = True
) -> dict[str, np.ndarray]:
    """The four files of a small Fashion-MNIST-shaped copy in ``folder``; returns what a reader
    must give (images in the official order, labels, the test flags)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train + n_test) % 10
    parts = {
        TRAIN_IMAGES: images[:n_train],
        TRAIN_LABELS: labels[:n_train],
        TEST_IMAGES: images[n_train:],
        TEST_LABELS: labels[n_train:],
    }
    for base, arr in parts.items():
        data = idx_bytes(arr)
        if gz:
            (folder / f"{base}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / base).write_bytes(data)
    return {"images": images, "labels": labels, "is_test": np.arange(len(labels)) >= n_train}


def tar_of(folder: Path, out: Path, arcname: str = "fmnist") -> Path:
    with tarfile.open(out, "w") as tf:
        tf.add(folder, arcname=arcname)
    return out


# =================================================================================================
# the real archive (../shared/data/fashion-mnist.tar)
# =================================================================================================
@pytest.fixture(scope="module")
def real() -> ImageDataset:
    if not FMNIST_TAR.is_file():
        pytest.skip("no shared Fashion-MNIST copy")
    return load_dataset("fashion_mnist", path=FMNIST_TAR)


@pytest.fixture(scope="module")
def served() -> dict[str, bytes]:
    """The archive's four .gz files by name: what the upstream mirrors serve."""
    if not FMNIST_TAR.is_file():
        pytest.skip("no shared Fashion-MNIST copy")
    blobs = read_tar(FMNIST_TAR, lambda n: n.endswith(".gz"))
    return {Path(k).name: v for k, v in blobs.items()}


@pytest.mark.slow
@needs_fmnist
def test_real_fashion_mnist_archive(real: ImageDataset) -> None:
    ds = real
    assert len(ds) == 70000 and ds.name == "fashion_mnist" and ds.source == "Fashion-MNIST"
    assert ds.classes == FASHION_MNIST_CLASSES and ds.classes[9] == "ankle boot"
    assert ds.origin["archive"] == "fashion-mnist.tar"
    assert ds.origin["archive_sha256"] == KNOWN_SHA256["fashion-mnist.tar"]
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (70000,)
    assert np.array_equal(ds.class_counts(), [7000] * 10)
    is_test = ds.official_split
    assert is_test is not None and is_test.dtype == np.bool_
    assert not is_test[:60000].any() and is_test[60000:].all()  # the official order
    assert np.array_equal(np.bincount(ds.labels[~is_test]), [6000] * 10)
    assert np.array_equal(np.bincount(ds.labels[is_test]), [1000] * 10)
    # kept grey (see the module doc), handed out RGB
    assert ds.array is not None and ds.array.shape == (70000, 28, 28)
    assert ds.array.dtype == np.uint8 and ds.image_shape == (28, 28, 3)
    for i in (0, 59999, 60000, 69999):
        px = rgb(ds, i)
        assert px.shape == (28, 28, 3)
        assert all(np.array_equal(px[..., c], ds.array[i]) for c in range(3))
    # upstream: mean pixel of the training images 72.94 (0.2860 of 255)
    assert round(float(ds.array[:60000].mean()), 2) == 72.94
    assert ds.labels[:20].tolist() == FIRST_TRAIN_LABELS
    assert ds.labels[60000:60010].tolist() == FIRST_TEST_LABELS
    assert ds.image_id(0) == f"{TRAIN_IMAGES}:0" and ds.image_id(60000) == f"{TEST_IMAGES}:0"


@pytest.mark.slow
@needs_fmnist
def test_real_images_reach_the_backbone_as_three_equal_channels(real: ImageDataset) -> None:
    """The features code resizes to the backbone's input and must get 3 channels: grey storage
    gives each view the grey value three times, exactly what a replicated array would."""
    from usdh.features import prepare_image

    for i in (0, 60000):
        view = prepare_image(real.image(i), 224)
        assert view.shape == (224, 224, 3) and view.dtype == np.uint8
        assert np.array_equal(view[..., 0], view[..., 1])
        assert np.array_equal(view[..., 1], view[..., 2])
        assert view.std() > 10  # a picture, not a blank
        replicated = Image.fromarray(np.repeat(real.array[i][..., None], 3, axis=2))
        assert np.array_equal(view, prepare_image(replicated, 224))
        rotated = prepare_image(real.image(i), 224, 90.0)
        assert np.array_equal(rotated[..., 0], rotated[..., 2])


@pytest.mark.slow
@needs_fmnist
def test_real_split_1k_69k(real: ImageDataset) -> None:
    ds = real
    split = make_split(ds, seed=0)  # the dataset's default protocol
    assert split.protocol == "1k-69k" and split.topk is None
    assert split.sizes == {"query": 1000, "database": 69000, "train": 69000}
    q, db = split["query"], split["database"]
    assert np.array_equal(np.bincount(ds.labels[q], minlength=10), [100] * 10)
    assert np.intersect1d(q, db).size == 0
    assert np.array_equal(np.sort(np.concatenate([q, db])), np.arange(70000))
    assert np.array_equal(split["train"], db)
    assert ds.official_split[q].any() and (~ds.official_split[q]).any()  # from all 70,000
    again = make_split(ds, seed=0)
    other = make_split(ds, seed=1)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["query"], other["query"])


@pytest.mark.slow
@needs_fmnist
def test_real_prepare_roundtrip(real: ImageDataset, tmp_path: Path) -> None:
    summary = prepare_dataset(real, tmp_path / "fm", progress=False)
    assert summary["storage"] == "array" and summary["n"] == 70000
    assert np.load(tmp_path / "fm" / "images.npy", mmap_mode="r").shape == (70000, 28, 28)
    meta = json.loads((tmp_path / "fm" / "meta.json").read_text())
    assert meta["image_shape"] == [28, 28, 3] and meta["source"] == "Fashion-MNIST"
    back = load_prepared(tmp_path / "fm", verify=True)
    assert back.name == "fashion_mnist" and back.source == "Fashion-MNIST"
    assert back.image_shape == (28, 28, 3) and back.origin["archive"] == "fashion-mnist.tar"
    assert np.array_equal(back.array, real.array)
    assert np.array_equal(back.labels, real.labels)
    assert np.array_equal(back.official_split, real.official_split)
    for i in (0, 12345, 69999):
        assert np.array_equal(rgb(back, i), rgb(real, i))
    assert back.image_id(60000) == real.image_id(60000)
    clone = pickle.loads(pickle.dumps(back))  # DataLoader workers re-map the file
    assert np.array_equal(rgb(clone, 5), rgb(real, 5))
    assert load_dataset("fmnist", path=tmp_path / "fm").name == "fashion_mnist"


@pytest.mark.slow
@needs_fmnist
def test_real_folder_layouts_read_the_same(real: ImageDataset, tmp_path: Path) -> None:
    """Debian's layout (.gz files in one folder), torchvision's (FashionMNIST/raw/, decompressed
    files beside the .gz) and the archive give the same dataset."""
    debian = tmp_path / "datasets" / "fashion-mnist"
    with tarfile.open(FMNIST_TAR) as tf:
        for member in tf.getmembers():
            if member.isfile():
                (debian / Path(member.name).name).parent.mkdir(parents=True, exist_ok=True)
                (debian / Path(member.name).name).write_bytes(tf.extractfile(member).read())
    tv = tmp_path / "tv" / "FashionMNIST" / "raw"
    tv.mkdir(parents=True)
    for gz in debian.iterdir():
        shutil.copy(gz, tv / gz.name)
        (tv / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    for path in (debian, tmp_path / "tv"):
        ds = load_dataset("Fashion-MNIST", path=path)
        assert ds.source == "Fashion-MNIST" and ds.origin["kind"] == "folder"
        assert np.array_equal(ds.array, real.array) and np.array_equal(ds.labels, real.labels)
        assert np.array_equal(ds.official_split, real.official_split)
    # the search finds it where a folder of such files sits
    assert find_dataset("fashion_mnist", search_dirs=[tmp_path / "datasets"]) == debian


@needs_fmnist
def test_real_search_finds_the_shared_archive() -> None:
    assert fx.SHARED.resolve() in [p.resolve() for p in default_search_dirs("fmnist")]
    assert find_dataset("fashion_mnist").resolve() == FMNIST_TAR.resolve()


@pytest.mark.slow
@needs_fmnist
def test_real_damaged_archive_is_caught(tmp_path: Path) -> None:
    data = bytearray(FMNIST_TAR.read_bytes())
    data[-20000] ^= 0xFF
    for name in ("fashion-mnist.tar", "renamed.tar"):  # by its name, or by its size
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(DataError, match=rf"checksum mismatch .*{name}.*sha256sum"):
            read_fashion_mnist(tmp_path / name)


# =================================================================================================
# the download (no network: _fetch is replaced)
# =================================================================================================
@pytest.mark.slow
@needs_fmnist
def test_download_writes_the_checked_files(
    served: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        return served[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(fm, "_fetch", fetch)
    ds = load_dataset("fashion_mnist", search_dirs=[tmp_path / "raw"], download=True)
    assert ds.source == "Fashion-MNIST" and len(ds) == 70000
    folder = tmp_path / "raw" / "fashion-mnist"
    assert ds.origin == {"kind": "folder", "location": str(folder)}
    assert sorted(p.name for p in folder.iterdir()) == sorted(served)  # no temporary left
    assert sorted(urls) == sorted(fm.FASHION_MNIST_URLS[0] + name for name in served)
    # files already there and good are not fetched again
    urls.clear()
    assert download_fashion_mnist(tmp_path / "raw") == folder and urls == []


@pytest.mark.slow
@needs_fmnist
def test_download_falls_back_to_the_next_mirror(
    served: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fetch(url: str) -> bytes:
        if url.startswith(fm.FASHION_MNIST_URLS[0]):
            raise OSError("<urlopen error [Errno 111] Connection refused>")
        return served[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(fm, "_fetch", fetch)
    folder = download_fashion_mnist(tmp_path)
    assert len(read_fashion_mnist(folder)) == 70000


@pytest.mark.slow
@needs_fmnist
def test_download_of_a_damaged_file_fails_and_writes_nothing(
    served: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last file comes damaged from every mirror: one clear error, and none of the four
    (nor a temporary file) is left, though three were good."""
    damaged = bytearray(served[f"{TEST_LABELS}.gz"])
    damaged[-6] ^= 0xFF  # the gzip trailer's CRC-32

    def fetch(url: str) -> bytes:
        name = url.rsplit("/", 1)[1]
        return bytes(damaged) if name == f"{TEST_LABELS}.gz" else served[name]

    monkeypatch.setattr(fm, "_fetch", fetch)
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", search_dirs=[tmp_path / "raw"], download=True)
    msg = str(err.value)
    assert not isinstance(err.value, DataNotFoundError)
    assert f"{TEST_LABELS}.gz" in msg and "nothing was written" in msg
    assert "CRC check failed" in msg and "damaged or different" in msg
    assert all(url in msg for url in fm.FASHION_MNIST_URLS)
    folder = tmp_path / "raw" / "fashion-mnist"
    assert not folder.exists() or list(folder.iterdir()) == []
    # a valid gzip of other data (MNIST's file, say) is refused by the IDX digest
    other = gzip.compress(idx_bytes(np.zeros(10000, np.uint8)))
    monkeypatch.setattr(fm, "_fetch", lambda url: other)
    with pytest.raises(DataError, match=r"decompressed sha256 [0-9a-f]{64}, expected c59f468a"):
        download_fashion_mnist(tmp_path / "raw")
    assert not folder.exists() or list(folder.iterdir()) == []


def test_download_offline_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str) -> bytes:
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(fm, "_fetch", offline)
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", search_dirs=[tmp_path], download=True)
    msg = str(err.value)
    assert "downloading Fashion-MNIST's train-images-idx3-ubyte.gz" in msg
    assert "name resolution" in msg and "fashion-mnist.tar" in msg
    assert "dataset-fashion-mnist" in msg and not (tmp_path / "fashion-mnist").exists()


# =================================================================================================
# small copies: layouts and every damage the reader must name
# =================================================================================================
@pytest.mark.parametrize("gz", [True, False])
def test_small_copy_folder_and_archive(tmp_path: Path, gz: bool) -> None:
    want = write_copy(tmp_path / "copy" / "fmnist", gz=gz)
    for path in (tmp_path / "copy", tar_of(tmp_path / "copy" / "fmnist", tmp_path / "f.tar")):
        ds = read_fashion_mnist(path, verify=False)
        assert len(ds) == 30 and ds.source == "Fashion-MNIST (unofficial copy)"
        assert np.array_equal(ds.array, want["images"])
        assert np.array_equal(ds.labels, want["labels"])
        assert np.array_equal(ds.official_split, want["is_test"])
        assert np.array_equal(rgb(ds, 25)[..., 1], want["images"][25])
    # by default the files must be upstream's
    with pytest.raises(DataError) as err:
        read_fashion_mnist(tmp_path / "copy")
    msg = str(err.value)
    assert f"{TRAIN_IMAGES}{'.gz' if gz else ''} is a valid IDX file but not upstream's" in msg
    assert fm.FASHION_MNIST_SHA256[TRAIN_IMAGES] in msg and "verify=False" in msg


def _gz_crc(folder: Path, base: str) -> None:
    data = bytearray((folder / f"{base}.gz").read_bytes())
    data[-8] ^= 0x01  # the CRC-32 in the gzip trailer
    (folder / f"{base}.gz").write_bytes(bytes(data))


def _gz_cut(folder: Path, base: str) -> None:
    data = (folder / f"{base}.gz").read_bytes()
    (folder / f"{base}.gz").write_bytes(data[: len(data) // 2])


def _rewrite(folder: Path, base: str, raw: bytes) -> None:
    (folder / f"{base}.gz").write_bytes(gzip.compress(raw))


def _raw(folder: Path, base: str) -> bytes:
    return gzip.decompress((folder / f"{base}.gz").read_bytes())


DAMAGES = {
    "wrong magic": (
        TRAIN_IMAGES,
        lambda f, b: _rewrite(f, b, b"\x12\x34\x56\x78" + _raw(f, b)[4:]),
        r"is not an unsigned-byte IDX file: magic number 305419896",
    ),
    "labels file as images": (
        TEST_IMAGES,
        lambda f, b: _rewrite(f, b, idx_bytes(np.zeros(10, np.uint8))),
        r"is an IDX file of 1 dimension\(s\) \(magic number 2049\), expected 3",
    ),
    "truncated body": (
        TRAIN_IMAGES,
        lambda f, b: _rewrite(f, b, _raw(f, b)[:-5]),
        r"header says 20 x 28 x 28 = 15680 bytes of data, but it holds 15675: it is truncated",
    ),
    "trailing bytes": (
        TRAIN_LABELS,
        lambda f, b: _rewrite(f, b, _raw(f, b) + b"\x00"),
        r"it is longer than its header says",
    ),
    "truncated header": (
        TEST_LABELS,
        lambda f, b: _rewrite(f, b, _raw(f, b)[:6]),
        r"holds 6 bytes, less than an IDX header \(8 bytes\)",
    ),
    "bad gzip CRC": (TEST_IMAGES, _gz_crc, r"cannot decompress .*: CRC check failed"),
    "truncated gzip": (TRAIN_LABELS, _gz_cut, r"cannot decompress .*: Compressed file ended"),
    "label 10": (
        TEST_LABELS,
        lambda f, b: _rewrite(f, b, idx_bytes(np.array([0, 1, 2, 10, 4, 5, 6, 7, 8, 9]))),
        r"label 10 at position 3 lies outside 0\.\.9",
    ),
    "32x32 images": (
        TEST_IMAGES,
        lambda f, b: _rewrite(f, b, idx_bytes(np.zeros((10, 32, 32), np.uint8))),
        r"holds 32x32 images; Fashion-MNIST's are 28x28",
    ),
    "missing file": (
        TEST_LABELS,
        lambda f, b: (f / f"{b}.gz").unlink(),
        r"lacks Fashion-MNIST file\(s\) t10k-labels-idx1-ubyte\[\.gz\]",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_each_damage_is_one_clear_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    base, spoil, says = DAMAGES[damage]
    folder = tmp_path / "copy"
    write_copy(folder)
    spoil(folder, base)
    missing = damage == "missing file"
    for path, where in (
        (folder, str(folder if missing else folder / base)),
        (tar_of(folder, tmp_path / "c.tar"), "c.tar:fmnist" + ("" if missing else f"/{base}")),
    ):
        with pytest.raises(DataError, match=says) as err:
            read_fashion_mnist(path, verify=False)
        msg = str(err.value)
        assert where in msg, msg
        if not missing:
            assert "copy fashion-mnist.tar (or the four IDX files) again" in msg
            assert "sha256sum" in msg


def test_counts_that_disagree(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    write_copy(folder)
    _rewrite(folder, TRAIN_LABELS, idx_bytes(np.arange(19) % 10))
    with pytest.raises(DataError) as err:
        read_fashion_mnist(folder, verify=False)
    msg = str(err.value)
    assert f"{folder / TRAIN_IMAGES}.gz holds 20 images" in msg
    assert f"{folder / TRAIN_LABELS}.gz holds 19 labels" in msg


def test_not_a_copy(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no Fashion-MNIST files: expected train-images"):
        read_fashion_mnist(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="neither a folder nor a tar archive of Fashion-MNIST"):
        read_fashion_mnist(tmp_path / "x.bin")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_fashion_mnist(tmp_path / "nope")
    other = tar_of(tmp_path / "empty", tmp_path / "other.tar")
    with pytest.raises(DataError, match="holds none of Fashion-MNIST's files"):
        read_fashion_mnist(other)
    write_copy(tmp_path / "two" / "a")
    write_copy(tmp_path / "two" / "b")
    with pytest.raises(DataError, match="more than one set of Fashion-MNIST files"):
        read_fashion_mnist(tar_of(tmp_path / "two", tmp_path / "two.tar", "x"))


def test_small_copy_prepare_roundtrip(tmp_path: Path) -> None:
    want = write_copy(tmp_path / "copy", gz=False)
    ds = read_fashion_mnist(tmp_path / "copy", verify=False)
    summary = prepare_dataset(ds, tmp_path / "prep", progress=False)
    assert summary["storage"] == "array"
    assert np.load(tmp_path / "prep" / "images.npy").shape == (30, 28, 28)  # grey: 1/3 the bytes
    back = load_prepared(tmp_path / "prep", verify=True)
    assert back.source == "Fashion-MNIST (unofficial copy)" and back.image_shape == (28, 28, 3)
    assert np.array_equal(back.array, want["images"])
    assert np.array_equal(back.official_split, want["is_test"])
    for i in (0, 29):
        assert np.array_equal(rgb(back, i), np.repeat(want["images"][i][..., None], 3, axis=2))
    # stored encoded (PNG), the grey images come back the same
    prepare_dataset(ds, tmp_path / "png", storage="encoded", progress=False)
    assert np.array_equal(rgb(load_prepared(tmp_path / "png"), 7), rgb(ds, 7))


def test_grey_array_store() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    store = ArrayStore(arr)
    im = store.get(1)
    assert im.mode == "RGB" and im.size == (4, 3)
    assert np.array_equal(np.asarray(im), np.repeat(arr[1][..., None], 3, axis=2))
    with pytest.raises(DataError, match=r"expected uint8 images \(n, H, W, 3\) or greyscale"):
        ArrayStore(np.zeros((2, 3, 4, 2), np.uint8))
    from usdh.features import prepare_image  # what the backbones get: 3 equal channels

    view = prepare_image(store.get(1), 16)
    assert view.shape == (16, 16, 3)
    assert np.array_equal(view[..., 0], view[..., 1]) and np.array_equal(view[..., 1], view[..., 2])


# =================================================================================================
# names, registry, protocol
# =================================================================================================
def test_names_and_registry(tmp_path: Path) -> None:
    for name in ("fashion_mnist", "Fashion-MNIST", "fashionmnist", "fmnist", "FMNIST"):
        assert canonical_name(name) == "fashion_mnist"
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        canonical_name("mnist")  # not an alias: MNIST is another dataset
    info = DATASETS["fashion_mnist"]
    assert info.can_download and info.download is download_fashion_mnist
    assert default_search_dirs("fashion_mnist")[-1] == Path("/usr/share/datasets/fashion-mnist")
    assert DEFAULT_PROTOCOLS["fashion_mnist"] == "1k-69k"
    proto = PROTOCOLS["1k-69k"]
    assert proto.dataset == "fashion_mnist" and proto.topk is None and proto.description
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", search_dirs=[tmp_path])
    msg = str(err.value)
    assert "download=True" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "fashion-mnist.tar" in msg and "train-images-idx3-ubyte" in msg


def synthetic_fashion() -> ImageDataset:
    """70,000 labels as Fashion-MNIST orders them (train then test; each class 6,000 + 1,000)."""
    rng = np.random.default_rng(5)
    labels = np.concatenate([rng.permutation(np.arange(60000) % 10), np.arange(10000) % 10])
    return fx.synthetic("fashion_mnist", labels, FASHION_MNIST_CLASSES, np.arange(70000) >= 60000)


def test_1k_69k_split() -> None:
    ds = synthetic_fashion()
    split = make_split(ds, "1k-69k", seed=3)
    q, db, tr = split["query"], split["database"], split["train"]
    assert split.sizes == {"query": 1000, "database": 69000, "train": 69000}
    assert np.array_equal(np.bincount(ds.labels[q], minlength=10), [100] * 10)
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == 70000
    assert np.array_equal(tr, db) and not np.shares_memory(tr, db)
    assert not np.all(np.diff(db) > 0)  # a seeded random order, never the dataset's
    assert all(np.array_equal(split[k], make_split(ds, "1k-69k", seed=3)[k]) for k in split)
    assert not np.array_equal(q, make_split(ds, "1k-69k", seed=4)["query"])
    small = make_split(ds, "1k-69k", seed=0, n_query_per_class=5)
    assert small.sizes["query"] == 50 and small.params == {"n_query_per_class": 5}
    with pytest.raises(DataError, match="n_query_per_class is 0"):
        make_split(ds, "1k-69k", n_query_per_class=0)
    with pytest.raises(DataError, match="takes 7001 query = 7001 per class"):
        make_split(ds, "1k-69k", n_query_per_class=7001)
    with pytest.raises(DataError, match="protocol '1k-69k' is for fashion_mnist, not cifar10"):
        make_split(fx.synthetic_cifar(), "1k-69k")


def test_1k_69k_with_the_extra_parts() -> None:
    """The label-free extra parts draw from the training pool (= the database) as elsewhere."""
    ds = synthetic_fashion()
    plain = make_split(ds, seed=0)
    split = make_split(
        ds, seed=0, rotation_subset=0.1, augmentation_subset=0.1, validation_queries=1000
    )
    for k in plain:
        assert np.array_equal(plain[k], split[k])
    rot, aug = split["rotation_subset"], split["augmentation_subset"]
    assert rot.size == aug.size == 6900
    assert np.isin(rot, split["train"]).all() and np.isin(aug, split["train"]).all()
    vq, vdb = split["val_query"], split["val_database"]
    assert vq.size == 1000 and vdb.size == 68000
    assert np.array_equal(np.sort(np.concatenate([vq, vdb])), np.sort(split["train"]))
    assert not np.isin(vq, split["query"]).any()
    sub = make_split(
        ds,
        seed=0,
        train_subset=5000,
        rotation_subset=0.1,
        augmentation_subset=0.1,
        validation_queries=1000,
    )
    assert sub.sizes["train_subset"] == 5000 and sub.sizes["rotation_subset"] == 500
    assert sub.sizes["augmentation_subset"] == 500 and sub.sizes["val_database"] == 4000
    for part in ("rotation_subset", "augmentation_subset", "val_query", "val_database"):
        assert np.isin(sub[part], sub["train_subset"]).all()
    assert not np.isin(sub["train_subset"], sub["query"]).any()
