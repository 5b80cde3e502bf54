"""Datasets and evaluation protocols.

Read a dataset (``load_dataset``), cache it compactly once (``prepare_dataset`` /
``load_prepared``), and draw a named, seeded split of it (``make_split`` / ``save_split`` /
``load_split``). No model code lives here.

    ds = load_dataset("cifar10")                       # searches data/raw/, ../shared/data/
    prepare_dataset(ds, "data/prepared/cifar10")       # decodes every image once
    ds = load_prepared("data/prepared/cifar10")
    split = make_split(ds, "deepbit", seed=0, train_subset=5000)
    save_split(split, "data/splits/cifar10/deepbit/0")
"""

from usdh.data.cifar10 import CIFAR10_CLASSES, download_cifar10, read_cifar10
from usdh.data.dataset import ArrayStore, EncodedStore, FileStore, ImageDataset, ImageStore
from usdh.data.errors import DataError, DataNotFoundError
from usdh.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    read_fashion_mnist,
)
from usdh.data.imagefolder import read_imagefolder
from usdh.data.loading import (
    DATASETS,
    canonical_name,
    default_search_dirs,
    find_dataset,
    load_dataset,
    project_root,
)
from usdh.data.nuswide import NUSWIDE21_CLASSES, read_nuswide
from usdh.data.oxford17 import OXFORD17_CLASSES, read_oxford17
from usdh.data.prepared import image_sizes, is_prepared, load_prepared, prepare_dataset
from usdh.data.protocols import (
    DEFAULT_PROTOCOLS,
    PROTOCOLS,
    Split,
    SplitProtocol,
    default_protocol,
    get_protocol,
    load_split,
    make_split,
    save_split,
    training_part,
    training_rows,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DEFAULT_PROTOCOLS",
    "FASHION_MNIST_CLASSES",
    "NUSWIDE21_CLASSES",
    "OXFORD17_CLASSES",
    "PROTOCOLS",
    "ArrayStore",
    "DataError",
    "DataNotFoundError",
    "EncodedStore",
    "FileStore",
    "ImageDataset",
    "ImageStore",
    "Split",
    "SplitProtocol",
    "canonical_name",
    "default_protocol",
    "default_search_dirs",
    "download_cifar10",
    "download_fashion_mnist",
    "find_dataset",
    "get_protocol",
    "image_sizes",
    "is_prepared",
    "load_dataset",
    "load_prepared",
    "load_split",
    "make_split",
    "prepare_dataset",
    "project_root",
    "read_cifar10",
    "read_fashion_mnist",
    "read_imagefolder",
    "read_nuswide",
    "read_oxford17",
    "save_split",
    "training_part",
    "training_rows",
]
