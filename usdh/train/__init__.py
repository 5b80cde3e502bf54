"""The one trainer of the deep hashers (USDH, DeepBit, GreedyHash, BiHalf): stages, SGD or Adam,
validation, checkpoints, logs.

A deep hasher here is a hash head (linear ``D -> K``, or one hidden layer first, then an
activation, then a binarizer) on a backbone, trained by minimising a
:class:`usdh.losses.CompositeLoss` of relaxed codes ``h`` and the binarizer's codes ``u``. There
is one training loop and two ways of turning a batch of row indices into what the loss needs,
``(h, features, h_rot)``:

* **head** (:class:`FeatureBatches`, the CPU default): the backbone is frozen, so its features are
  computed once by the features stage and the head trains on the cached ``(N, D)`` features and,
  when the rotation term is active, the cached rotated views ``(N, A, D)``. Minutes on a CPU.
* **finetune** (:class:`ImageBatches`, for a GPU): end to end on images, with the backbone's last
  ``n_trainable`` units trainable (:meth:`usdh.backbones.Backbone.freeze`). Every view is made on
  the fly by :func:`usdh.features.prepare_image`, the code that made the cached features, so the
  two modes see the same pixels. The semantic term's features are the pretrained backbone's cached
  features, passed in, so its neighbourhood targets do not drift as the backbone trains.

Training runs a list of :class:`Stage` (epochs, learning rate, loss-weight overrides): DeepBit's
two stages are data, not code. Each stage starts a fresh SGD optimiser (as a second Caffe solver
run from the first stage's weights does). Within a stage the model is evaluated on a seeded
validation subset carved from the training rows after every epoch; training stops after
``patience`` epochs without a lower validation total, and the stage ends on its best validation
epoch (the totals of different stages weigh different terms, so they are compared only within a
stage). With ``val_fraction=0`` there is no validation and a stage ends on its last epoch.

Determinism: all randomness (head init, validation split, shuffling, dropout) comes from ``seed``
through a seeded ``torch.Generator`` and torch's generator (forked, so the caller's state is left
alone), under :func:`usdh.device.torch_determinism`. On the CPU the same inputs, seed and thread
count give bitwise identical weights. A checkpoint (model, optimiser, position, RNG states, best
state, log) is written atomically after every epoch; ``resume=True`` continues from it and ends
bitwise where an uninterrupted run ends.

The package, by job: :mod:`~usdh.train.model` (the hash head, its activations chosen by name, the
model around a backbone), :mod:`~usdh.train.batches` (the two batch adapters),
:mod:`~usdh.train.config` (stages, the configuration, the result), :mod:`~usdh.train.checkpoint`
(checkpoint, RNG state, fingerprint, CSV log) and :mod:`~usdh.train.loop` (:func:`train`). Import
from ``usdh.train``; the names below are its public API.
"""

from usdh.train.batches import FeatureBatches, ImageBatches
from usdh.train.checkpoint import CHECKPOINT_FILE, LOG_FILE, write_log_csv
from usdh.train.config import Stage, TrainConfig, TrainResult
from usdh.train.loop import Monitor, NonFiniteLossError, train
from usdh.train.model import ACTIVATIONS, BINARIZERS, INIT_STD, HashHead, HashModel

__all__ = [
    "ACTIVATIONS",
    "BINARIZERS",
    "CHECKPOINT_FILE",
    "INIT_STD",
    "LOG_FILE",
    "FeatureBatches",
    "HashHead",
    "HashModel",
    "ImageBatches",
    "Monitor",
    "NonFiniteLossError",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "train",
    "write_log_csv",
]
