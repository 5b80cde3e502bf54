"""The loss terms of the deep hashers, one small module each, combined by weights from params.yaml.

Every term maps relaxed codes ``h`` (B, K) (plus, where it needs them, the binarizer's codes ``u``
in {-1, +1} or their relaxed form, the backbone features of the batch, the relaxed codes of
rotated views and the batch's row indices) to a scalar.
:class:`CompositeLoss` sums the terms with their weights; a weight of 0 removes a term entirely (it
is not even computed), which is how the ablations switch criteria off.

Which formula comes from where (DeepBit's released Caffe layers, the USDH abstract, or our choice)
is written down term by term in ``docs/usdh.md``. Conventions shared by all terms: sums run over
bits, means over the batch, and DeepBit's factor 1/2 is kept, so a term's value does not depend on
the batch size and DeepBit's loss weights carry over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PAIR_TERMS",
    "TERMS",
    "BottleneckLoss",
    "CompositeLoss",
    "ContrastiveLoss",
    "EntropyLoss",
    "LossTerm",
    "PenaltyLoss",
    "QuantizationLoss",
    "RotationLoss",
    "SemanticLoss",
    "build_loss",
]


class LossTerm(nn.Module):
    """One criterion. ``needs`` says which inputs besides ``h`` it reads (features, rotations,
    index); ``prepare`` sees the whole training set once before training (for terms whose targets
    are global, such as a k-nearest-neighbour graph)."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    def prepare(self, features: torch.Tensor, generator: torch.Generator) -> None:
        """Precompute from all training features ``(N, D)``; most terms need nothing."""

    def forward(
        self,
        h: torch.Tensor,
        *,
        codes: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        h_rot: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        rot_mask: torch.Tensor | None = None,
        h_pair: torch.Tensor | None = None,
        codes_pair: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def _binary(h: torch.Tensor) -> torch.Tensor:
    """b = 1[h > 0.5], outside the graph (a step function has no useful gradient)."""
    return (h.detach() > 0.5).to(h.dtype)


class QuantizationLoss(LossTerm):
    """``1/2 sum_k (b_k - h_k)^2``, batch mean: relaxed codes pulled to their binary codes.

    DeepBit's ``MinQuantizeLoss`` computes the same value; its Caffe backward pass, however, sends
    one scalar to every element instead of the true gradient ``h - b``, which we use.
    """

    name = "quantization"

    def forward(self, h: torch.Tensor, **_: Any) -> torch.Tensor:
        return 0.5 * (h - _binary(h)).pow(2).sum(dim=1).mean()


ENTROPY_FORMS = ("mean_square", "binary_entropy")


class EntropyLoss(LossTerm):
    """Each bit used half the time: its batch mean ``mu_k`` pushed to 0.5.

    ``form="mean_square"``: ``1/2 sum_k (mu_k - 1/2)^2`` with ``mu_k`` the mean of the relaxed
    codes (DeepBit's ``EvenDistLoss`` averages the *binary* codes, which has no gradient, and
    back-propagates a constant instead). ``form="binary_entropy"``: ``sum_k (log 2 - H(mu_k))``,
    the gap to the maximum entropy of a bit; both are 0 exactly when every bit is balanced.
    """

    name = "entropy"

    def __init__(self, form: str = "mean_square") -> None:
        super().__init__()
        if form not in ENTROPY_FORMS:
            raise ValueError(f"entropy form must be one of {ENTROPY_FORMS}, got {form!r}")
        self.form = form

    def forward(self, h: torch.Tensor, **_: Any) -> torch.Tensor:
        mu = h.mean(dim=0)
        if self.form == "mean_square":
            return 0.5 * (mu - 0.5).pow(2).sum()
        mu = mu.clamp(1e-6, 1 - 1e-6)
        entropy = -(mu * mu.log() + (1 - mu) * (1 - mu).log())
        return (math.log(2.0) - entropy).sum()


class RotationLoss(LossTerm):
    """``1/2 sum_k (h_k(x) - h_k(rot_a x))^2`` weighted by ``exp(-(a / sigma)^2 / 2)``.

    The mean runs over (image, angle) pairs, as DeepBit's ``TransformLoss`` averages over its
    pairs; ``rot_mask`` picks the batch rows whose rotated views are stored (the features stage
    may rotate a seeded subset of the training rows only). With ``sigma=5`` the weights of
    -10, -5, 5, 10 degrees are DeepBit's ``exp(-(i - 3)^2 / 2)`` for i = 1, 2, 4, 5.
    """

    name = "rotation"
    needs = frozenset({"rotations"})

    def __init__(self, sigma: float = 5.0) -> None:
        super().__init__()
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"rotation sigma must be a positive number of degrees, got {sigma!r}")
        self.sigma = float(sigma)

    def weights(self, angles: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * (angles / self.sigma) ** 2)

    def forward(
        self,
        h: torch.Tensor,
        *,
        h_rot: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        rot_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        if h_rot is None or angles is None:
            raise ValueError("the rotation term needs the codes of rotated views and their angles")
        if rot_mask is not None:  # only the batch rows that have rotated views
            h = h[rot_mask]
            if h.shape[0] == 0:
                return h_rot.sum() * 0.0
        if h_rot.ndim != 3 or h_rot.shape[0] != h.shape[0] or h_rot.shape[2] != h.shape[1]:
            raise ValueError(
                f"rotated codes must have shape (B, A, K) = ({h.shape[0]}, A, {h.shape[1]}), "
                f"got {tuple(h_rot.shape)}"
            )
        if angles.shape != (h_rot.shape[1],):
            raise ValueError(f"{h_rot.shape[1]} rotated views need as many angles, got {angles}")
        dist = (h.unsqueeze(1) - h_rot).pow(2).sum(dim=2)  # (B, A)
        return 0.5 * (dist * self.weights(angles)).mean()


class PenaltyLoss(LossTerm):
    """``mean |(|h| - 1)^p|`` over batch and bits: GreedyHash's pull of the linear outputs ``h``
    towards +-1, where the sign loses nothing (Su et al. 2018; ``p = 3`` in its release). Meant
    for the identity activation."""

    name = "penalty"

    def __init__(self, power: float = 3.0) -> None:
        super().__init__()
        if isinstance(power, bool) or not isinstance(power, int | float) or power <= 0:
            raise ValueError(f"penalty power must be a number > 0, got {power!r}")
        self.power = float(power)

    def forward(self, h: torch.Tensor, **_: Any) -> torch.Tensor:
        return (h.abs() - 1.0).pow(self.power).abs().mean()


CONSTRUCTIONS = ("cosine", "knn", "ssdh")
PAIRINGS = ("all", "halves")


class SemanticLoss(LossTerm):
    """Code similarities made to follow the similarity structure of the backbone features.

    ``construction``:

    * ``"cosine"``: regression, ``mean (cos(u_i, u_j) - cos(f_i, f_j))^2`` over the batch's pairs:
      ``pairs="all"`` (every ``i != j``, ours) or ``"halves"`` (row ``i`` of the first half with
      row ``i`` of the second, as the GreedyHash and BiHalf releases pair them). ``u`` are the
      binarizer's codes (``2h - 1`` without a binarizer); GreedyHash and BiHalf regress their
      binary codes' cosines this way, with ``center=False`` (raw cosines, as released).
    * ``"knn"``: a pseudo-label graph: ``i`` and ``j`` are similar when either is among the other's
      ``k`` nearest neighbours (cosine) in the whole training set, dissimilar otherwise.
    * ``"ssdh"``: SSDH's rule (Yang et al., IJCAI 2018): the cosine distances of sampled training
      pairs are fitted by two half-Gaussians around their mode; pairs closer than
      ``mode - alpha_l * sigma_l`` are similar, farther than ``mode + alpha_r * sigma_r``
      dissimilar, the rest ignored.

    The graph constructions use DPSH's pairwise likelihood ``log(1 + e^t) - s t`` with
    ``t = u_i . u_j / 2``, the similar and the dissimilar pairs weighted equally (similar pairs
    are rare). ``center`` subtracts the training-set mean feature before any cosine (post-ReLU
    features all point into one orthant, so raw cosines are all high).
    """

    name = "semantic"
    needs = frozenset({"features", "index"})

    def __init__(
        self,
        construction: str = "cosine",
        center: bool = True,
        k: int = 20,
        alpha_l: float = 2.0,
        alpha_r: float = 2.0,
        n_pairs: int = 200_000,
        pairs: str = "all",
    ) -> None:
        super().__init__()
        if pairs not in PAIRINGS:
            raise ValueError(f"semantic pairs must be one of {PAIRINGS}, got {pairs!r}")
        if construction not in CONSTRUCTIONS:
            raise ValueError(
                f"unknown semantic construction {construction!r}; choose one of {CONSTRUCTIONS}"
            )
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"semantic k must be a positive integer, got {k!r}")
        for name, value in (("alpha_l", alpha_l), ("alpha_r", alpha_r)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"semantic {name} must be a finite number >= 0, got {value!r}")
        if not isinstance(n_pairs, int) or n_pairs < 100:
            raise ValueError(f"semantic n_pairs must be an integer >= 100, got {n_pairs!r}")
        self.construction = construction
        self.center = bool(center)
        self.k = k
        self.alpha_l = float(alpha_l)
        self.alpha_r = float(alpha_r)
        self.n_pairs = n_pairs
        self.pairs = pairs
        self.register_buffer("mean", None)
        self.register_buffer("units", None, persistent=False)
        self.register_buffer("neighbours", None)
        self.register_buffer("thresholds", None)

    # -- global targets, from the whole training set -----------------------------------------------
    def _unit(self, f: torch.Tensor) -> torch.Tensor:
        if self.center:
            if self.mean is None:
                raise RuntimeError("the semantic term was not prepared with the training features")
            f = f - self.mean
        return F.normalize(f, dim=1)

    def _batch_units(self, features: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The batch's unit features: gathered from :meth:`prepare`'s when the rows are known."""
        if self.units is not None and index is not None:
            return self.units[index.to(self.units.device)]
        return self._unit(features)

    def prepare(self, features: torch.Tensor, generator: torch.Generator) -> None:
        n = features.shape[0]
        self.mean = features.mean(dim=0) if self.center else None
        unit = self._unit(features)
        # every row's unit feature, once: a batch then gathers its rows instead of normalising
        self.units = unit if self.construction != "knn" else None
        if self.construction == "knn":
            if self.k >= n:
                raise ValueError(f"semantic k={self.k} needs more than {self.k} training rows")
            nbrs = []
            for chunk in unit.split(2048):
                sim = chunk @ unit.T
                start = sum(len(c) for c in nbrs)
                rows = torch.arange(start, start + len(chunk), device=sim.device)
                sim[torch.arange(len(chunk)), rows] = -math.inf  # not one's own neighbour
                nbrs.append(sim.topk(self.k, dim=1).indices)
            self.neighbours = torch.cat(nbrs)
        elif self.construction == "ssdh":
            i = torch.randint(n, (self.n_pairs,), generator=generator).to(unit.device)
            j = torch.randint(n, (self.n_pairs,), generator=generator).to(unit.device)
            keep = i != j
            d = (1.0 - (unit[i[keep]] * unit[j[keep]]).sum(dim=1)).double()
            self.thresholds = _half_gaussian_thresholds(d, self.alpha_l, self.alpha_r).to(
                features.dtype
            )

    # -- the loss ----------------------------------------------------------------------------------
    def forward(
        self,
        h: torch.Tensor,
        *,
        codes: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        if features is None:
            raise ValueError("the semantic term needs the backbone features of the batch")
        if features.shape[0] != h.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows for a batch of {h.shape[0]} codes")
        u = 2.0 * h - 1.0 if codes is None else codes
        b = h.shape[0]
        if self.construction == "cosine":
            f = self._batch_units(features, index)
            code = F.normalize(u, dim=1)
            if self.pairs == "halves":
                m = b // 2
                if m == 0:
                    raise ValueError("the halves pairing needs a batch of at least 2 rows")
                target = (f[:m] * f[m : 2 * m]).sum(dim=1)
                return ((code[:m] * code[m : 2 * m]).sum(dim=1) - target).pow(2).mean()
            off = ~torch.eye(b, dtype=torch.bool, device=h.device)
            return (code @ code.T - f @ f.T)[off].pow(2).mean()
        off = ~torch.eye(b, dtype=torch.bool, device=h.device)
        if self.construction == "knn":
            if index is None or self.neighbours is None:
                raise ValueError("the knn construction needs the batch's row indices and prepare()")
            nb = self.neighbours[index.to(self.neighbours.device)]  # (B, k)
            hit = (nb.unsqueeze(1) == index.to(nb.device).view(1, b, 1)).any(dim=2)
            similar = (hit | hit.T).to(h.device)
            dissimilar = ~similar
        else:
            if self.thresholds is None:
                raise ValueError("the ssdh construction needs prepare() first")
            f = self._batch_units(features, index)
            dist = 1.0 - f @ f.T
            similar = dist <= self.thresholds[0]
            dissimilar = dist >= self.thresholds[1]
        return _pairwise_likelihood(u, similar & off, dissimilar & off)


def _half_gaussian_thresholds(d: torch.Tensor, alpha_l: float, alpha_r: float) -> torch.Tensor:
    """``(mode - alpha_l sigma_l, mode + alpha_r sigma_r)`` of distances ``d``.

    The mode is the centre of the fullest bin of a 100-bin histogram; each sigma is the root mean
    square distance to the mode of the samples on its side (a half-Gaussian's maximum likelihood).
    """
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-12:
        raise ValueError("all sampled feature distances are equal; the features carry no structure")
    counts = torch.histc(d, bins=100, min=lo, max=hi)
    width = (hi - lo) / 100
    mode = lo + (int(counts.argmax()) + 0.5) * width
    left, right = d[d < mode], d[d >= mode]
    sigma_l = float((left - mode).pow(2).mean().sqrt()) if len(left) else 0.0
    sigma_r = float((right - mode).pow(2).mean().sqrt()) if len(right) else 0.0
    return torch.tensor([mode - alpha_l * sigma_l, mode + alpha_r * sigma_r])


def _pairwise_likelihood(
    u: torch.Tensor, similar: torch.Tensor, dissimilar: torch.Tensor
) -> torch.Tensor:
    """Balanced DPSH negative log-likelihood of the labelled pairs (0 if the batch has none)."""
    theta = 0.5 * u @ u.T
    nll = F.softplus(theta) - similar.to(u.dtype) * theta
    parts = [nll[mask].mean() for mask in (similar, dissimilar) if bool(mask.any())]
    if not parts:
        return u.sum() * 0.0
    return torch.stack(parts).mean()


def _check_pair(h: torch.Tensor, other: torch.Tensor | None, what: str, term: str) -> torch.Tensor:
    if other is None:
        raise ValueError(f"the {term} term needs the {what} of a second view of every image")
    if other.shape != h.shape:
        raise ValueError(
            f"the second view's {what} have shape {tuple(other.shape)}, not {tuple(h.shape)}"
        )
    return other


class ContrastiveLoss(LossTerm):
    """NT-Xent between the codes of two views of each image (CIBHash's contrastive term).

    The 2B codes ``[u; u']`` are compared by cosine similarity divided by ``temperature``; each
    code's positive is the other view of its image, its negatives the other 2B - 2 codes; the loss
    is the cross-entropy of picking the positive, averaged over the 2B codes (CIBHash's
    ``NtXentLoss``: its sum over 2B rows divided by 2B; temperature 0.3 in its release).
    """

    name = "contrastive"
    needs = frozenset({"pairs"})

    def __init__(self, temperature: float = 0.3) -> None:
        super().__init__()
        t = temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"contrastive temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(t)

    def forward(
        self,
        h: torch.Tensor,
        *,
        codes: torch.Tensor | None = None,
        codes_pair: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        u = h if codes is None else codes
        u_pair = _check_pair(u, codes_pair, "codes", self.name)
        b = u.shape[0]
        if b < 2:
            raise ValueError("the contrastive term needs at least 2 images per batch")
        z = F.normalize(torch.cat([u, u_pair]), dim=1)
        logits = z @ z.T / self.temperature
        self_pairs = torch.eye(2 * b, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_pairs, float("-inf"))
        positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
        return F.cross_entropy(logits, positive)


class BottleneckLoss(LossTerm):
    """The symmetric KL divergence between the bit probabilities of two views of each image,
    each direction against the other view's probabilities held fixed (CIBHash's information-
    bottleneck term, weight 0.001 in its release): ``1/2 (KL(p || sg(p')) + KL(p' || sg(p)))``,
    summed over bits (Bernoulli KLs, ``1e-8`` inside each log as in the release) and averaged over
    the batch. ``h`` must be probabilities (the sigmoid activation)."""

    name = "bottleneck"
    needs = frozenset({"pairs"})
    eps = 1e-8

    def _kl(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        q = q.detach()
        e = self.eps
        kl = p * ((p + e).log() - (q + e).log()) + (1 - p) * ((1 - p + e).log() - (1 - q + e).log())
        return kl.sum(dim=1).mean()

    def forward(
        self, h: torch.Tensor, *, h_pair: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        other = _check_pair(h, h_pair, "relaxed codes", self.name)
        return 0.5 * (self._kl(h, other) + self._kl(other, h))


#: term name -> class; params.yaml's ``loss`` section names these
TERMS: dict[str, type[LossTerm]] = {
    cls.name: cls
    for cls in (
        SemanticLoss,
        QuantizationLoss,
        EntropyLoss,
        RotationLoss,
        PenaltyLoss,
        ContrastiveLoss,
        BottleneckLoss,
    )
}
#: the terms that compare two augmented views of an image (they need a bank, ``usdh.augment``)
PAIR_TERMS = tuple(name for name, cls in TERMS.items() if "pairs" in cls.needs)


class CompositeLoss(nn.Module):
    """``sum_t w_t L_t``; terms with weight 0 are dropped. Returns the total and, for the log, every
    active term's unweighted value."""

    def __init__(self, terms: Mapping[str, tuple[float, LossTerm]]) -> None:
        super().__init__()
        self.weights = {name: float(w) for name, (w, _) in terms.items() if w > 0}
        self.terms = nn.ModuleDict({name: t for name, (w, t) in terms.items() if w > 0})

    @property
    def active(self) -> list[str]:
        return list(self.terms)

    @property
    def needs(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for term in self.terms.values():
            out |= term.needs
        return out

    def prepare(self, features: torch.Tensor, generator: torch.Generator) -> None:
        for term in self.terms.values():
            term.prepare(features, generator)

    def forward(
        self, h: torch.Tensor, **inputs: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``inputs``: the keyword inputs of :meth:`LossTerm.forward` (codes, features, h_rot,
        angles, index, rot_mask, h_pair, codes_pair), passed to every term."""
        total = h.new_zeros(())
        parts: dict[str, float] = {}
        for name, term in self.terms.items():
            value = term(h, **inputs)
            parts[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total, parts


def build_loss(config: Mapping[str, Mapping[str, Any]]) -> CompositeLoss:
    """A :class:`CompositeLoss` from ``{term: {"weight": w, **options}}`` (params.yaml's form)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"the loss config must map term names to options, got {config!r}")
    terms: dict[str, tuple[float, LossTerm]] = {}
    for name, spec in config.items():
        if name not in TERMS:
            raise ValueError(f"unknown loss term {name!r}; the terms are {', '.join(TERMS)}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"loss term {name!r} needs a mapping of options, got {spec!r}")
        options = dict(spec)
        w = options.pop("weight", 0.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ValueError(
                f"the weight of loss term {name!r} must be a finite number >= 0 (0 switches it "
                f"off), got {w!r}"
            )
        try:
            term = TERMS[name](**options)
        except TypeError as exc:
            raise ValueError(f"bad option for loss term {name!r}: {exc}") from None
        terms[name] = (float(w), term)
    return CompositeLoss(terms)
