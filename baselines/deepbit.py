"""DeepBit (Lin et al., CVPR 2016) as its released Caffe code trains it, on the shared trainer.

DeepBit is USDH's trainer with three of the four terms and different defaults, so it is a subclass
that changes only defaults; there is no second training loop. From the release
(github.com/kevinlin311tw/cvpr16-deepbit, ``examples/deepbit-cifar10-*`` and
``src/caffe/layers/K*_loss_layer.cpp``):

* a trainable fc8 (``D -> K``, Gaussian init std 0.01, zero bias) on a frozen VGG-16 whose fc7
  output is the input (here: whatever backbone the features stage used);
* ``EvenDistLoss`` (weight 1), ``MinQuantizeLoss`` (weight 1), ``TransformLoss`` (weight 0.001);
* stage 1: the first two losses, SGD lr 1e-3, momentum 0.9, weight decay 5e-4, batch 32, the lr
  divided by 10 half-way (``stepsize`` 25000 of ``max_iter`` 50000): two stages here;
  stage 2: adds the rotation loss at lr 1e-4;
* codes are thresholded at the mean training activation of each bit (``run_cifar10.m``).

Where this port differs (see ``docs/usdh.md``): the Caffe backward passes of the even-distribution
and quantization layers send one scalar to every element instead of their gradients; we use the
true gradients (of the relaxed-code batch mean for the even distribution, whose Caffe forward
averages binary codes). The release's fc8 is followed by a ReLU (``relu8_kevin``), which we keep
as the default: with a sigmoid and true gradients the objective collapses to one code for every
image (the measurement is in docs/usdh.md). Epoch counts are ours: the release's iteration counts
are for 50,000 images.
"""

from __future__ import annotations

from typing import Any, ClassVar

from usdh.method import USDH, with_defaults

__all__ = ["DeepBit"]


@with_defaults(epochs=30, lr=1e-3, threshold="mean", activation="relu")
class DeepBit(USDH):
    """DeepBit's objective and schedule; every ``USDH`` parameter still applies."""

    DEFAULT_LOSS: ClassVar[dict[str, dict[str, Any]]] = {
        "semantic": {"weight": 0.0},
        "quantization": {"weight": 1.0},
        "entropy": {"weight": 1.0, "form": "mean_square"},
        "rotation": {"weight": 0.001, "sigma": 5.0},
    }
    #: stage 1 (lr, then its step to lr / 10) without rotations; stage 2 with them at lr / 10
    #: (the release: lr 1e-3, 1e-4, 1e-4)
    DEFAULT_STAGES: ClassVar[tuple[dict[str, Any], ...]] = (
        {"weights": {"rotation": 0.0}},
        {"lr_factor": 0.1, "weights": {"rotation": 0.0}},
        {"lr_factor": 0.1},
    )
