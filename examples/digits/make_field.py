"""Build the example's field data: a same-distribution batch and a shifted batch, from test.npz.

Deterministic and seeded: running it again rewrites the same files. Run from the repository root:
``python examples/digits/make_field.py``. ``nnassay monitor examples/digits/assessment.yaml --field
examples/digits/field`` then compares each batch with the assessed data (test.npz).

- ``batch-01-same.npz``: 180 digits drawn from test.npz (the monitor drops repeated rows from the
  reference, so the comparison is a held-out split), labels kept.
- ``batch-02-shifted.npz``: 180 other digits of test.npz, brighter (+0.15 background and strokes)
  with sensor noise (Gaussian, sigma 0.05), clipped to [0, 1]; labels kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261204
BATCH = 180


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brighter digits with sensor noise, in [0, 1]."""
    return np.clip(x + 0.15 + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(SEED)
    with np.load(HERE / "test.npz") as data:
        x, y = data["x"], data["y"]
    order = rng.permutation(len(x))
    same, other = order[:BATCH], order[BATCH : 2 * BATCH]
    out = HERE / "field"
    out.mkdir(exist_ok=True)
    np.savez_compressed(out / "batch-01-same.npz", x=x[same], y=y[same])
    np.savez_compressed(out / "batch-02-shifted.npz", x=shifted(x[other], rng), y=y[other])


if __name__ == "__main__":
    main()
