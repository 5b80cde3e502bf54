"""The network the trainer trains: the hash head (an MLP, an activation, a binarizer) on a backbone.

The activation and the binarizer are small modules chosen by name from :data:`ACTIVATIONS` and
:data:`BINARIZERS`, as the loss terms are chosen from :data:`usdh.losses.TERMS`: params.yaml names
them, and :meth:`usdh.method.USDH.relaxed` runs the same activation module on the saved weights, so
there is one definition of each. The head's forward pass gives the relaxed codes ``h``; the
binarizer turns their signed form (:meth:`Activation.signed`) into the codes ``u`` in {-1, +1}
that the loss terms compare, with a surrogate gradient (training only; encoding thresholds ``h``
at the activation's midpoint).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BINARIZERS",
    "INIT_STD",
    "Activation",
    "Binarizer",
    "HashHead",
    "HashModel",
    "build_activation",
    "build_binarizer",
]

#: DeepBit's fc8 initialisation (Gaussian, std 0.01, zero bias)
INIT_STD = 0.01


class Activation(nn.Module):
    """An activation with its midpoint (the encoding threshold) and its signed form."""

    midpoint: ClassVar[float] = 0.0

    def signed(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` mapped so that the sign is the bit: ``2h - 1`` around 0.5, ``h`` around 0."""
        return 2.0 * h - 1.0 if self.midpoint == 0.5 else h


class Sigmoid(Activation):
    """h in (0, 1), bit = h > 0.5 (the USDH reconstruction)."""

    midpoint = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


class ReLU(Activation):
    """h >= 0 (DeepBit's released ``relu8_kevin`` after fc8), thresholded at 0.5 all the same."""

    midpoint = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class Identity(Activation):
    """h = the linear output, bit = h > 0 (GreedyHash's and BiHalf's hash layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Tanh(Activation):
    """h in (-1, 1), bit = h > 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


#: activation name -> module class; iterating it gives the names
ACTIVATIONS: dict[str, type[Activation]] = {
    "sigmoid": Sigmoid,
    "relu": ReLU,
    "identity": Identity,
    "tanh": Tanh,
}


class _SignSTE(torch.autograd.Function):
    """sign forward (0 maps to -1, as the encoder's ``h > midpoint`` does), gradient passed
    through unchanged (GreedyHash, Su et al. 2018, eq. 7)."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor) -> torch.Tensor:
        return torch.where(s > 0, 1.0, -1.0).to(s.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def bi_half(s: torch.Tensor) -> torch.Tensor:
    """Per column, the larger ``floor(B / 2)`` values of the batch to +1, the rest to -1 (ties
    by the stable sort's order), so every bit splits the batch in half."""
    order = torch.sort(s, dim=0, descending=True, stable=True).indices
    n_pos = s.shape[0] // 2
    ranked = torch.ones_like(s)
    ranked[n_pos:] = -1.0
    return torch.empty_like(s).scatter_(0, order, ranked)


class _BiHalfSTE(torch.autograd.Function):
    """Bi-half forward; backward ``g + gamma (s - b) / numel`` (Li and van Gemert 2021)."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, gamma: float) -> torch.Tensor:
        b = bi_half(s)
        ctx.save_for_backward(s, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        s, b = ctx.saved_tensors
        return grad + ctx.gamma * (s - b) / b.numel(), None


class _BernoulliSTE(torch.autograd.Function):
    """``u = +1 where s > t, else -1`` for thresholds ``t``; backward ``g / 2``: the identity with
    respect to the bit probability ``p = (s + 1) / 2``, as CIBHash's ``hash_layer`` passes the
    gradient of ``sign(p - t')`` straight to ``p``."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where(s > t, 1.0, -1.0).to(s.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return 0.5 * grad, None


class Binarizer(nn.Module):
    """Signed relaxed codes ``s`` to the codes ``u`` the loss terms compare."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s


class NoBinarizer(Binarizer):
    """u = s: the loss sees the relaxed codes (USDH and DeepBit as reconstructed)."""


class SignBinarizer(Binarizer):
    """u = sign(s) with a straight-through gradient (GreedyHash)."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return _SignSTE.apply(s)


class BiHalfBinarizer(Binarizer):
    """u = bi-half(s): each bit +1 for the larger half of the batch (BiHalf); ``gamma`` weighs
    the pull of ``s`` towards ``u`` in the backward pass."""

    def __init__(self, gamma: float = 6.0) -> None:
        super().__init__()
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or gamma < 0:
            raise ValueError(f"bi-half gamma must be a number >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return _BiHalfSTE.apply(s, self.gamma)


class BernoulliBinarizer(Binarizer):
    """Bits drawn from their probabilities ``p = (s + 1) / 2`` (sigmoid outputs): ``u = +1`` with
    probability ``p``, by comparing ``p`` with uniform noise drawn from torch's seeded generator
    (CIBHash's probabilistic binary layer), with the straight-through gradient with respect to
    ``p``. ``sample=False`` thresholds ``p`` at 0.5 instead (what CIBHash's release runs: its
    ``hash_layer(prob - 0.5)``, github.com/qiuzx2/CIBHash ``model/CIBHash.py``)."""

    def __init__(self, sample: bool = True) -> None:
        super().__init__()
        if not isinstance(sample, bool):
            raise ValueError(f"bernoulli sample must be true or false, got {sample!r}")
        self.sample = sample

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        # p > U  <=>  s > 2U - 1, with U uniform on [0, 1)
        t = 2.0 * torch.rand_like(s) - 1.0 if self.sample else torch.zeros_like(s)
        return _BernoulliSTE.apply(s, t)


#: binarizer name -> module class
BINARIZERS: dict[str, type[Binarizer]] = {
    "none": NoBinarizer,
    "sign": SignBinarizer,
    "bihalf": BiHalfBinarizer,
    "bernoulli": BernoulliBinarizer,
}


def _build(kind: str, table: Mapping[str, type[nn.Module]], name: str, **options: Any) -> Any:
    """``table[name](**options)``, or a ValueError that lists the ``kind``'s names."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{kind} must be one of {tuple(table)}, got {name!r}")
    try:
        return table[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad option for {kind} {name!r}: {exc}") from None


def build_activation(name: str) -> Activation:
    """The activation module called ``name`` (a key of :data:`ACTIVATIONS`)."""
    return _build("activation", ACTIVATIONS, name)


def build_binarizer(name: str, options: Mapping[str, Any] | None = None) -> Binarizer:
    """The binarizer called ``name`` (a key of :data:`BINARIZERS`) with its ``options``."""
    return _build("binarizer", BINARIZERS, name, **dict(options or {}))


class HashHead(nn.Module):
    """``[Linear D -> H, ReLU] -> Linear -> n_bits`` then an activation: relaxed codes ``h``.

    The hash layer is initialised as DeepBit's fc8 (Gaussian, std 0.01, zero bias), the hidden
    layer by He's rule (Gaussian, std sqrt(2 / D), zero bias), both from ``generator``, so the
    initial weights depend on the seed only. ``hidden`` (H) adds one hidden
    layer, an analogue of a trainable fc7; ``None``: the linear head. ``activation`` names a
    module of :data:`ACTIVATIONS` (kept as ``activation_fn``); ``binarizer`` one of
    :data:`BINARIZERS` (applied by :meth:`codes`, not by ``forward``).
    """

    def __init__(
        self,
        in_features: int,
        n_bits: int,
        generator: torch.Generator | None = None,
        activation: str = "sigmoid",
        hidden: int | None = None,
        binarizer: str = "none",
        binarizer_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.activation_fn = build_activation(activation)
        self.binarizer_fn = build_binarizer(binarizer, binarizer_options)
        self.activation = activation
        self.hidden = nn.Linear(in_features, hidden) if hidden else None
        # nn.Linear's own initialisation draws from the global generator first, as it always has
        self.linear = nn.Linear(hidden or in_features, n_bits)
        with torch.no_grad():
            if self.hidden is not None:  # He init: the ReLU layer keeps the signal's scale
                std = math.sqrt(2.0 / in_features)
                self.hidden.weight.normal_(0.0, std, generator=generator)
                self.hidden.bias.zero_()
            self.linear.weight.normal_(0.0, INIT_STD, generator=generator)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        return self.activation_fn(self.linear(x))

    def codes(self, h: torch.Tensor) -> torch.Tensor:
        """The binarizer's codes ``u`` of relaxed codes ``h`` (what the loss terms compare)."""
        return self.binarizer_fn(self.activation_fn.signed(h))


class HashModel(nn.Module):
    """``head(tail(body(x)))``: a frozen body (no gradients), a trainable tail, the hash head.

    Head mode has neither body nor tail (``x`` are cached features). The body stays in eval mode;
    the tail trains in eval mode too unless ``tail_dropout`` (VGG's fc7 unit opens with dropout),
    so by default fine-tuning sees the same deterministic features the head mode caches.
    """

    def __init__(
        self,
        head: HashHead,
        body: nn.Module | None = None,
        tail: nn.Module | None = None,
        tail_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.head = head
        self.body = body
        self.tail = tail
        self.tail_dropout = tail_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body is not None:
            with torch.no_grad():
                x = self.body(x)
        if self.tail is not None:
            x = self.tail(x)
        return self.head(x)

    def train(self, mode: bool = True) -> HashModel:
        super().train(mode)
        if self.body is not None:
            self.body.eval()
        if self.tail is not None and not self.tail_dropout:
            self.tail.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Head and tail tensors (what a checkpoint holds; the frozen body never changes)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("body.")}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        result = self.load_state_dict(dict(state), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("body.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"checkpoint does not match the model: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
