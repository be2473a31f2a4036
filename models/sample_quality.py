"""Offline sample-quality metrics for generated images (8x8 digits and the like).

* Nearest-neighbour distances (Euclidean, pixels in [0, 1]; lower is better):
  ``sample_to_data_distance`` is the mean distance from each sample to its nearest held-out
  image (low: samples look like real images); ``data_to_sample_distance`` the mean distance from
  each held-out image to its nearest sample (low: the samples cover the data; a generator that
  repeats one good digit scores well on the first and badly on the second). They play the roles
  of precision and recall but are distances, not fractions. The same numbers for held-out data against an equally large set of
  training images are the reference a perfect generator would reach.
* A classifier-based score: a multinomial logistic regression (torch, L-BFGS) fitted on the
  training images and labels; ``classifier_score = exp(E_x KL(p(y | x) || p(y)))`` (the inception score's form, at
  most the number of classes: confident *and* varied samples), ``confidence`` the mean top
  class probability, ``class_coverage`` the number of classes that are some sample's top class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidDataError

__all__ = ["DigitClassifier", "nearest_neighbour_distances", "sample_quality"]


def _as_2d(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise InvalidDataError(f"{what} must be a non-empty (n, features) array, got {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidDataError(f"{what} holds NaN or infinite values")
    return a


def nearest_neighbour_distances(samples: Any, reference: Any) -> np.ndarray:
    """For each row of ``samples``, the Euclidean distance to its nearest row of ``reference``."""
    a, b = _as_2d(samples, "samples"), _as_2d(reference, "reference")
    if a.shape[1] != b.shape[1]:
        raise InvalidDataError(
            f"samples have {a.shape[1]} features but the reference {b.shape[1]}")
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


class DigitClassifier:
    """Multinomial logistic regression (softmax of an affine map, L2 penalty ``l2`` on the
    weights) fitted by full-batch L-BFGS in float64 on training images and integer labels
    ``0..C-1``: the reference classifier of :func:`sample_quality`."""

    def __init__(self, images: Any, labels: Any, *, l2: float = 3e-4, max_iter: int = 200):
        import torch

        x = torch.as_tensor(_as_2d(images, "images"))
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if y.shape != (x.shape[0],) or int(y.min()) < 0:
            raise InvalidDataError(
                f"labels must be non-negative integers of shape ({x.shape[0]},), got "
                f"{tuple(y.shape)}")
        self.num_classes = int(y.max()) + 1
        self.weight = torch.zeros(x.shape[1], self.num_classes, dtype=torch.float64,
                                  requires_grad=True)
        self.bias = torch.zeros(self.num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.weight, self.bias], lr=1, max_iter=max_iter,
                                tolerance_grad=1e-8, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (torch.nn.functional.cross_entropy(x @ self.weight + self.bias, y)
                    + l2 * (self.weight ** 2).sum())
            loss.backward()
            return loss

        opt.step(closure)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def probs(self, images: Any) -> np.ndarray:
        import torch

        x = torch.as_tensor(_as_2d(images, "images"))
        return torch.softmax(x @ self.weight + self.bias, 1).numpy()

    def accuracy(self, images: Any, labels: Any) -> float:
        return float((self.probs(images).argmax(1) == np.asarray(labels)).mean())

    def score(self, images: Any) -> dict[str, float]:
        """``classifier_score``, ``confidence`` and ``class_coverage`` (module docstring)."""
        p = np.clip(self.probs(images), 1e-12, 1.0)
        marginal = p.mean(0)
        kl = (p * (np.log(p) - np.log(marginal)[None, :])).sum(1)
        return {"classifier_score": float(np.exp(kl.mean())),
                "confidence": float(p.max(1).mean()),
                "class_coverage": int(np.unique(p.argmax(1)).size)}


def sample_quality(samples: Any, test: Any, *, classifier: DigitClassifier | None = None,
                   ) -> dict[str, float]:
    """``sample_to_data_distance``, ``data_to_sample_distance`` (module docstring) of
    ``samples`` against held-out ``test`` images, plus the classifier scores when a
    ``classifier`` is given."""
    s = _as_2d(samples, "samples")
    t = _as_2d(test, "test")
    out: dict[str, float] = {
        "sample_to_data_distance": float(nearest_neighbour_distances(s, t).mean()),
        "data_to_sample_distance": float(nearest_neighbour_distances(t, s).mean()),
    }
    if classifier is not None:
        out.update(classifier.score(s))
    return out
