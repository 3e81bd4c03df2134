"""Models that ship inside the package, usable by name without training:

    fbp-jax predict --model=ravdess-audio speech.wav

Each is an export directory (`fbp_jax.serving.export`) under `fbp_jax/serving/models/<name>/`
with a MODEL_CARD.md beside it: the data it was trained on and its licence, its
cross-validated accuracy, its classes and how it was made.
"""

from __future__ import annotations

import os

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def available() -> tuple[str, ...]:
    """Names of the shipped models (folders holding an export)."""
    if not os.path.isdir(MODELS_DIR):
        return ()
    return tuple(
        sorted(
            n
            for n in os.listdir(MODELS_DIR)
            if os.path.isfile(os.path.join(MODELS_DIR, n, "serving.json"))
        )
    )


def path(name: str) -> str:
    """The export directory of a shipped model."""
    if name not in available():
        raise KeyError(f"no shipped model {name!r}; shipped: {list(available())}")
    return os.path.join(MODELS_DIR, name)
