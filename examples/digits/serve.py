"""The handler that serves the digits model (``runyard serve RUN:model --handler
examples/digits/serve.py:Digits``): its demo page takes an image of a digit, dark on light, any
size (runyard turns it into 8x8 grey pixels), and draws the ten class scores as bars."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from runyard.serve import Image, Input, Scores


def _examples() -> list[dict[str, list[list[int]]]]:
    """The first digits of the bundled data, as the page shows them: dark ink on white, 0-255."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:5]
    return [{"image": (255 - image / 16 * 255).round().astype(int).tolist()} for image in images]


class Digits:
    """A handwritten digit, 0 to 9: upload an image of one (dark on light), or pick an example."""

    examples = _examples()

    def load(self, model_dir: str) -> None:
        # Loading is the handler's business: runyard itself never unpickles anything.
        with open(Path(model_dir) / "model.pkl", "rb") as f:
            self.model = pickle.load(f)  # noqa: S301 - our own model, from our own training run

    def predict(self, image: Image = Input(width=8, height=8, mode="L",  # noqa: B008 - a declaration
                                           description="a digit, dark on light")) -> Scores:
        ink = (255.0 - np.asarray(image, dtype=np.float64)) / 255.0  # as trained: 0 background, 1 ink
        scores = self.model.predict_proba(ink.reshape(1, -1))[0]
        return {str(label): float(score) for label, score in zip(self.model.classes_, scores, strict=True)}
