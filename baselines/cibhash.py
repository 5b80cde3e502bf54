"""CIBHash (Qiu, Su, Ou, Yu and Chen, "Unsupervised Hashing with Contrastive Information
Bottleneck", IJCAI 2021) on the shared trainer.

CIBHash is USDH's trainer with another head, binarizer and objective, fed two augmented views of
each image, so it is a subclass that changes only defaults. From the authors' release
(github.com/qiuzx2/CIBHash, commit e976ace: ``model/CIBHash.py``, ``model/base_model.py``,
``utils/data.py``):

* a head ``Linear(D, 1024) -> ReLU -> Linear(1024, K) -> sigmoid`` on frozen VGG-16 fc7
  features: bit probabilities ``p`` (``hidden=1024``, sigmoid activation);
* binary codes from ``p`` with a straight-through gradient to ``p`` (``bernoulli`` binarizer):
  the paper's probabilistic binary layer samples them (``sample: true``, our default, as the
  issue that added this method asks); the release thresholds ``p`` at 0.5 instead
  (``hash_layer(prob - 0.5)``: ``sample: false``);
* loss = NT-Xent between the two views' codes, temperature 0.3 (``contrastive``) + 0.001 x the
  symmetric KL between the two views' bit probabilities, each against the other held fixed
  (``bottleneck``);
* Adam, lr 1e-3, no weight decay, batch 64, 60 epochs (80 at 16 bits);
* codes ``p > 0.5`` at evaluation;
* views: random resized crop (scale 0.5-1), flip, colour jitter (p 0.7), grey (p 0.2), 3x3
  Gaussian blur (p 0.5), fresh every step.

Where this port differs (docs/methods.md): on the CPU the backbone cannot see fresh views every
step, so training draws two distinct views per image and step from a seeded bank of ``V`` views
per image (``usdh.augment``, the bank stage), and trains on the bank's images only; the features
of the views are computed once in eval mode (the release's frozen VGG runs fc6/fc7 with dropout
on); the head's initialisation is ours (He, then DeepBit's std 0.01 for the hash layer); lr,
epochs and head width are chosen on our validation split under the budget every deep method gets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from usdh.method import USDH, with_defaults

__all__ = ["CIBHash"]


@with_defaults(
    activation="sigmoid",
    hidden=1024,
    binarizer="bernoulli",
    binarizer_options={"sample": True},
    optimizer="adam",
    lr=1e-3,
    batch_size=64,
    epochs=60,
    weight_decay=0.0,
    val_fraction=0.0,
    patience=None,
)
class CIBHash(USDH):
    """CIBHash's head, binarizer and objective on two views per image; every ``USDH`` parameter
    still applies."""

    DEFAULT_LOSS: ClassVar[dict[str, dict[str, Any]]] = {
        "contrastive": {"weight": 1.0, "temperature": 0.3},
        "bottleneck": {"weight": 0.001},
    }
