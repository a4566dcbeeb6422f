"""How far an image lies from what a model was trained on, in the model's own image-embedding space.

A model trained on chest-radiograph phantoms writes fluent, confident reports for anything it is shown, a
real radiograph or a photograph of a cat. Training ends by fitting a Gaussian to the unit-norm image
embeddings of its training images (mean, and a Ledoit-Wolf shrunk covariance: well conditioned with few
images) and measuring the Mahalanobis distance of held-out validation images; ``ood.safetensors`` in the
model folder keeps the mean, the precision matrix and that distance's 99th percentile. The score of a new
image is its distance divided by that percentile: 1 is where 1 % of held-out images of the training
distribution already lie, and images well above it are outside what the model saw.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OOD_NAME", "OodScorer", "fit_ood", "fit_training_images", "load_ood", "OOD_WARN_AT"]

OOD_NAME = "ood.safetensors"
OOD_WARN_AT = 2.0  # scores above this are reported as outside the training images (twice the 99th percentile)


@dataclass
class OodScorer:
    """Mahalanobis distance to the training images, in units of the held-out images' 99th percentile."""

    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D]
    reference: float  # the 99th percentile of held-out training-distribution distances
    source: str | None = None  # the file it was read from, for errors

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of unit-norm image features [N, D] -> [N].

        Raises:
            DataError: naming the file when it holds statistics of features of another width (another model's).
        """
        features = np.asarray(features, dtype=np.float64)
        if features.shape[-1] != self.mean.shape[-1] or self.precision.shape != (len(self.mean),) * 2:
            from medlens.errors import DataError

            raise DataError(  # numpy's broadcast error would be a traceback naming nothing
                f"statistics of {self.mean.shape[-1]}-wide image features (precision {self.precision.shape}); the "
                f"model gives {features.shape[-1]}-wide ones",
                file=self.source or OOD_NAME,
                expected="the statistics training wrote beside this model's weights; delete the file to go without "
                "the score",
            )
        centred = features - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """[N] scores: 1 is the 99th percentile of held-out images like the training ones."""
        return self.distances(features) / self.reference

    def save(self, folder: str | os.PathLike) -> None:
        import torch
        from safetensors.torch import save_file

        tensors = {"mean": self.mean, "precision": self.precision, "reference": np.array([self.reference])}
        save_file(
            {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in tensors.items()},
            str(Path(folder) / OOD_NAME),
        )


def fit_ood(train: np.ndarray, held_out: np.ndarray | None = None) -> OodScorer:
    """Fit the scorer on training-image features [N, D]; calibrate on held-out ones (the training ones without).

    Raises:
        ValueError: with fewer than two training images.
    """
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=np.float64)
    if len(train) < 2:
        raise ValueError("at least two training images are needed to describe them")
    lw = LedoitWolf().fit(train)
    scorer = OodScorer(lw.location_, lw.precision_, 1.0)
    reference = held_out if held_out is not None and len(held_out) >= 2 else train
    scorer.reference = float(max(np.quantile(scorer.distances(reference), 0.99), 1e-12))
    return scorer


def load_ood(folder: str | os.PathLike) -> OodScorer | None:
    """The folder's scorer, or None for a folder trained before it was recorded (read as data, never code)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from medlens.errors import DataError

    path = Path(folder) / OOD_NAME
    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        return OodScorer(t["mean"], t["precision"], float(t["reference"][0]), source=str(path))
    except (SafetensorError, KeyError, IndexError) as e:  # truncated, or not the scorer's tensors
        raise DataError(
            f"the out-of-distribution statistics cannot be read ({type(e).__name__}: {e})",
            file=str(path),
            expected="mean, precision and reference as training wrote them; delete the file to go without the score",
        ) from e


def fit_training_images(
    folder: str | os.PathLike,
    train: list[dict],
    val: list[dict],
    seed: int,
    encode_images: Callable,
    limit: int,
) -> None:
    """Write ``folder/ood.safetensors``: a sample of at most ``limit`` training conversations' first images embedded by
    ``encode_images`` (PIL images -> [B, D] features), calibrated on the validation images; ``medlens
    generate`` warns about images far from them."""
    import torch

    from medlens.data.images import load_image

    def embed(records: list[dict]) -> np.ndarray:
        feats = [
            encode_images([load_image(r["images"][0], grey=False) for r in records[i : i + 16]])
            for i in range(0, len(records), 16)
        ]
        return torch.cat(feats).float().cpu().numpy()

    rng = np.random.default_rng(seed)
    sample = [train[i] for i in sorted(rng.choice(len(train), size=min(len(train), limit), replace=False))]
    fit_ood(embed(sample), embed(val[:limit]) if len(val) >= 2 else None).save(folder)
