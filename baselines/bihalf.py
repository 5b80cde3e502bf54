"""BiHalf (Li and van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy",
AAAI 2021) on the shared trainer.

BiHalf is USDH's trainer with another head, binarizer and objective, so it is a subclass that
changes only defaults. From the authors' release (github.com/liyunqianggyn/
Deep-Unsupervised-Image-Hashing, ``ImageHashing/Cifar10_I.py``; the same layer in
swuxyj/DeepHash-pytorch, ``Unsupervised_BiHalf.py``):

* a hash layer ``nn.Linear(D, K)`` on frozen VGG-16 fc7 features, no activation (``h`` real);
* the bi-half layer: per bit, the larger half of the batch to +1, the rest to -1; backward
  ``g + gamma (h - b) / (B K)`` with ``gamma = 6`` (``bihalf`` binarizer);
* loss = ``mse(cos(b_i, b_{i+B/2}), cos(x_i, x_{i+B/2}))``, the first half of the batch paired
  with the second, raw feature cosines;
* SGD lr 1e-4, momentum 0.9, weight decay 5e-4, batch 32, 300 epochs, lr / 10 at epoch 120;
* codes ``sign(h)`` at evaluation (not the bi-half split, which needs a batch).

Where this port differs (docs/methods.md): features computed once in eval mode (the release trains
with fc6/fc7 dropout on), and a schedule chosen on our validation split under the shared budget.
"""

from __future__ import annotations

from typing import Any, ClassVar

from usdh.method import USDH, with_defaults

__all__ = ["BiHalf"]


@with_defaults(
    activation="identity",
    binarizer="bihalf",
    binarizer_options={"gamma": 6.0},
    lr=1e-4,
    epochs=300,
    val_fraction=0.0,
    patience=None,
)
class BiHalf(USDH):
    """BiHalf's head, bi-half layer and objective; every ``USDH`` parameter still applies."""

    DEFAULT_LOSS: ClassVar[dict[str, dict[str, Any]]] = {
        "semantic": {"weight": 1.0, "construction": "cosine", "center": False, "pairs": "halves"},
    }
