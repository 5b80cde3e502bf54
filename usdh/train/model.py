"""The network the trainer trains: the hash head (linear layer, then an activation) on a backbone.

The activation is a small module chosen by name from :data:`ACTIVATIONS`, as the loss terms are
chosen from :data:`usdh.losses.TERMS`: ``TrainConfig.activation`` and params.yaml name it, and
:meth:`usdh.method.USDH.relaxed` runs the same module on the saved weights, so there is one
definition of each activation. A later step after the activation (a binarizer: sign with a
straight-through gradient, bi-half, Bernoulli sampling) fits the same way: a table of small
modules by name, a ``build_*`` that names the choices in its error, and one more stage in
:meth:`HashHead.forward`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "INIT_STD", "HashHead", "HashModel", "build_activation"]

#: DeepBit's fc8 initialisation (Gaussian, std 0.01, zero bias)
INIT_STD = 0.01

#: activation name -> module class; "sigmoid": h in (0, 1) (the USDH reconstruction); "relu":
#: DeepBit's released prototxt (``relu8_kevin`` after fc8), h >= 0, thresholded at 0.5 all the
#: same. Iterating it gives the names.
ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def _build(kind: str, table: Mapping[str, type[nn.Module]], name: str) -> nn.Module:
    """``table[name]()``, or a ValueError that lists the ``kind``'s names."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{kind} must be one of {tuple(table)}, got {name!r}")
    return table[name]()


def build_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (a key of :data:`ACTIVATIONS`)."""
    return _build("activation", ACTIVATIONS, name)


class HashHead(nn.Module):
    """Linear ``D -> n_bits`` then an activation: relaxed codes ``h``, bit = ``h > threshold``.

    Initialised as DeepBit's fc8 (Gaussian, std 0.01, zero bias) from ``generator``, so the
    initial weights depend on the seed only, not on the global generator's history.
    ``activation`` names a module of :data:`ACTIVATIONS` (kept as ``activation_fn``; the name is
    ``activation``). Its state is ``linear.weight`` and ``linear.bias`` only.
    """

    def __init__(
        self,
        in_features: int,
        n_bits: int,
        generator: torch.Generator | None = None,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.activation_fn = build_activation(activation)
        self.activation = activation
        # nn.Linear's own initialisation draws from the global generator first, as it always has
        self.linear = nn.Linear(in_features, n_bits)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, INIT_STD, generator=generator)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation_fn(self.linear(x))


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
