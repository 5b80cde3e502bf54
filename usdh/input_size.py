"""``python -m usdh.input_size <dataset>``: what a backbone input size costs and buys on a dataset.

The input size is a choice per dataset (``datasets.<name>.input_size``): small images such as
Fashion-MNIST's 28 px need not be upsampled to the 160 px CIFAR-10 runs at, and the features
stage's cost grows with the square of the size. This measures, on a seeded sample of the dataset
(``n_database`` images and ``n_query`` others, disjoint), for each size: the extraction speed
with the pipeline's settings (``features:``), and two cheap quality figures of the features
themselves, label-free methods aside: the accuracy of a k-nearest-neighbour vote (cosine) of each
query among the sample's database, and the cosine mAP over it. ITQ at 32 bits on the same
sample says whether the figure survives hashing. docs/features.md records the runs.

Not a pipeline stage: a study whose numbers a person reads before setting the parameter.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["cosine_scores", "measure", "sample_rows"]


def sample_rows(n_images: int, n_query: int, n_database: int, seed: int) -> tuple[NDArray, NDArray]:
    """Seeded, disjoint query and database rows of a dataset of ``n_images``."""
    if n_query + n_database > n_images:
        raise ValueError(
            f"a sample of {n_query} queries and {n_database} database images needs "
            f"{n_query + n_database} images; the dataset has {n_images}"
        )
    rows = np.random.default_rng(seed).permutation(n_images)[: n_query + n_database]
    return np.sort(rows[:n_query]), np.sort(rows[n_query:])


def cosine_scores(
    query: NDArray, database: NDArray, q_labels: NDArray, db_labels: NDArray, k: int = 10
) -> dict[str, float]:
    """kNN accuracy (majority of the ``k`` most cosine-similar database images, ties to the
    lowest label) and cosine mAP over the whole database, of single-label data."""
    q, d = np.asarray(query, dtype=np.float64), np.asarray(database, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    sim = q @ d.T
    order = np.argsort(-sim, axis=1, kind="stable")
    n_classes = int(max(q_labels.max(), db_labels.max())) + 1
    votes = np.zeros((len(q), n_classes), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(q)), k), db_labels[order[:, :k]].ravel()), 1)
    accuracy = float(np.mean(votes.argmax(axis=1) == q_labels))
    relevant = db_labels[order] == q_labels[:, None]
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    n_rel = relevant.sum(axis=1)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(n_rel, 1)
    return {"knn_accuracy": accuracy, "cosine_mAP": float(ap.mean())}


def measure(
    params: dict[str, Any],
    dataset: str,
    sizes: Sequence[int],
    *,
    n_query: int = 1000,
    n_database: int = 5000,
    seed: int = 0,
    k: int = 10,
) -> list[dict[str, Any]]:
    """One record per input size: the speed of the pipeline's extraction and the figures of
    :func:`cosine_scores`, plus ITQ's mAP at 32 bits, on the same seeded sample."""
    from baselines.itq import ITQ
    from usdh.data import load_dataset
    from usdh.features import extract_features
    from usdh.metrics import evaluate_retrieval
    from usdh.params import features_params
    from usdh.stages.features import extraction_settings, pipeline_backbone

    ds = load_dataset(dataset)
    labels = np.asarray(ds.labels)
    q_rows, db_rows = sample_rows(len(ds), n_query, n_database, seed)
    rows = np.concatenate([q_rows, db_rows])
    records = []
    for size in sizes:
        sized = {**params, "features": {**params["features"], "input_size": int(size)}}
        fp = features_params(sized)
        info: dict[str, Any] = {}
        feats = extract_features(
            ds,
            pipeline_backbone(sized),
            **extraction_settings(fp),
            indices=rows,
            info=info,
            progress=False,
        )
        q, db = feats[: len(q_rows)], feats[len(q_rows) :]
        scores = cosine_scores(q, db, labels[q_rows], labels[db_rows], k)
        itq = ITQ(n_bits=32, random_state=seed).fit(db)
        hashed = evaluate_retrieval(
            itq.encode(q), itq.encode(db), labels[q_rows], labels[db_rows], None
        )
        records.append(
            {
                "input_size": int(size),
                **{key: round(v, 4) for key, v in scores.items()},
                "itq32_mAP": round(float(hashed["mAP_tie_aware"]), 4),
                "images_per_s": info["images_per_s"],
                "engine": fp.get("engine", "eager"),
                "batch_size": info.get("batch_size"),
            }
        )
        print(json.dumps(records[-1]), flush=True)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    from usdh.params import load_params

    ap = argparse.ArgumentParser(prog="python -m usdh.input_size", description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--database", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    measure(
        load_params(args.params),
        args.dataset,
        args.sizes,
        n_query=args.queries,
        n_database=args.database,
        seed=args.seed,
        k=args.k,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
