"""A linear classifier on codes (or features): the paper's classification use of binary codes."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PARTS", "classify_codes"]

#: the split parts a classification protocol has: fit, choose C, score
PARTS = ("train", "val", "test")


def classify_codes(
    train: np.ndarray,
    y_train: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    seed: int,
    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
) -> dict[str, Any]:
    """Test accuracy of a linear classifier (multinomial logistic regression) on ``train``.

    The inverse regularisation ``C`` is chosen on ``val``; the classifier is then refitted on train
    and val together. Inputs are standardised with the training statistics (for codes: the
    unpacked bits as 0/1 columns).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c: float) -> Any:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        )

    scores = {c: float(model(c).fit(train, y_train).score(val, y_val)) for c in cs}
    best = max(cs, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    final = model(best).fit(np.concatenate([train, val]), np.concatenate([y_train, y_val]))
    return {
        "accuracy": float(final.score(test, y_test)),
        "C": best,
        "val_accuracy": {str(c): v for c, v in scores.items()},
    }
