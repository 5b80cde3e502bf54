"""GreedyHash (Su, Zhang, Zhang and Tian, NeurIPS 2018), unsupervised, on the shared trainer.

GreedyHash is USDH's trainer with another head and objective, so it is a subclass that changes only
defaults. From the authors' release (github.com/ssppp/GreedyHash, ``unsupervised_vgg.py``; the
same in swuxyj/DeepHash-pytorch, ``Unsupervised_GreedyHash.py``):

* a hash layer ``nn.Linear(D, K)`` on frozen VGG-16 fc7 features, no activation (``h`` real);
* the sign in the forward pass, the gradient passed straight through unchanged (``sign`` binarizer);
* loss = ``mse(cos(b_i, b_{i+B/2}), cos(x_i, x_{i+B/2}))`` over the first half of the batch paired
  with the second (raw, uncentred feature cosines) + ``0.1 * mean |(|h| - 1)^3|`` (the penalty);
* SGD lr 1e-4, momentum 0.9, weight decay 5e-4, batch 32, 60 epochs (300 at 16 bits);
* codes ``sign(h)`` at evaluation.

Where this port differs (docs/methods.md): our features are computed once in eval mode (the
release runs fc6/fc7 with dropout active while training, so its targets are noisy), and the
schedule (batch, lr, epochs) is chosen on our validation split under the budget every deep method
gets, since the release's 1.9M steps at batch 32 do not fit a CPU pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from usdh.method import USDH, with_defaults

__all__ = ["GreedyHash"]


@with_defaults(
    activation="identity", binarizer="sign", lr=1e-4, epochs=60, val_fraction=0.0, patience=None
)
class GreedyHash(USDH):
    """GreedyHash's head, binarizer and objective; every ``USDH`` parameter still applies."""

    DEFAULT_LOSS: ClassVar[dict[str, dict[str, Any]]] = {
        "semantic": {"weight": 1.0, "construction": "cosine", "center": False, "pairs": "halves"},
        "penalty": {"weight": 0.1, "power": 3.0},
    }
