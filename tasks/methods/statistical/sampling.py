"""Monte Carlo sampling on ONNX Runtime: class counts of many random perturbations per sample.

Every sample has its own random stream, seeded (seed, stage, sample index), and its draws are made
in order, so the counts do not depend on the batch size, on the other samples or on sharding.
Draws of several samples are stacked into large batches, one ONNX Runtime call per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nnassay.tasks.io.model_io import ModelRunner

MAX_BATCH_FLOATS = 1 << 24  # 64 MB of float32 per batch, whatever the input size


class Sampler:
    """Fills a buffer with random perturbations of one sample, in data space."""

    label: str = ""

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        """Write ``len(out)`` perturbed copies of ``x`` into ``out`` (float32, in place)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Gaussian(Sampler):
    """x + N(0, sigma^2 I), optionally clipped to the value range (None: never clipped)."""

    sigma: float
    clip: tuple[float, float] | None = None

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"Gaussian noise, sigma {self.sigma:g}" + (", clipped to the value range" if self.clip else "")

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        rng.standard_normal(dtype=np.float32, out=out)
        out *= np.float32(self.sigma)
        out += x
        if self.clip is not None:
            np.clip(out, *self.clip, out=out)


@dataclass(frozen=True)
class UniformNoise(Sampler):
    """x + U(-eps, eps) per value, then clipped to the value range (the uniform_noise threat)."""

    eps: float
    clip: tuple[float, float]

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"uniform noise in the L-inf ball of radius {self.eps:g}, clipped to the value range"

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        rng.random(dtype=np.float32, out=out)
        out *= np.float32(2 * self.eps)
        out += x - np.float32(self.eps)
        np.clip(out, *self.clip, out=out)


@dataclass(frozen=True)
class UniformBox(Sampler):
    """Uniform over the L-inf ball intersected with the value range (itself a box)."""

    eps: float
    clip: tuple[float, float]

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"uniform over the L-inf ball of radius {self.eps:g} within the value range"

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        low, high = box(x, self.eps, self.clip)
        rng.random(dtype=np.float32, out=out)
        out *= high - low
        out += low


def box(x: np.ndarray, eps: float, clip: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners of the L-inf ball of radius eps around x, within the value range."""
    low = np.maximum(x - np.float32(eps), np.float32(clip[0])).astype(np.float32)
    high = np.minimum(x + np.float32(eps), np.float32(clip[1])).astype(np.float32)
    return low, high


def rows_per_batch(batch: int, sample_shape: tuple[int, ...]) -> int:
    """Rows per ONNX Runtime call: ``batch``, capped so one batch stays under 64 MB."""
    size = max(int(np.prod(sample_shape)), 1)
    return max(1, min(batch, MAX_BATCH_FLOATS // size))


def stream(seed: int, stage: int, index: int) -> np.random.Generator:
    """The random stream of one sample in one stage of a method."""
    return np.random.default_rng([seed, stage, index])


def class_counts(
    model: ModelRunner,
    x: np.ndarray,
    sampler: Sampler,
    draws: int,
    *,
    seed: int,
    stage: int,
    first_index: int = 0,
    batch: int = 10_000,
    keep_going: Callable[[], bool] = lambda: True,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[np.ndarray, int]:
    """Predicted-class counts over ``draws`` perturbations of each sample of ``x``.

    The next batch of perturbations is drawn in a helper thread while ONNX Runtime classifies the
    current one (NumPy's generators and ONNX Runtime both release the GIL), so noise generation
    mostly hides behind inference. Only the helper thread touches the random streams, in order.

    Args:
        model: the ONNX classifier.
        x: samples in data space, shape (N, ...).
        sampler: how one sample is perturbed.
        draws: perturbations per sample.
        seed, stage: seed the per-sample streams with ``first_index + i``.
        batch: rows per ONNX Runtime call (capped at 64 MB).
        keep_going: checked between batches; False stops early (time budget).
        progress: called with (samples done, N).

    Returns:
        (counts, done): int64 counts of shape (N, classes), and how many leading samples are
        complete (N unless ``keep_going`` stopped the run; rows from ``done`` on are not valid).
    """
    n = len(x)
    counts = np.zeros((n, model.n_classes), np.int64)
    done = 0
    batches = _batches(x, sampler, draws, rows_per_batch(batch, x.shape[1:]), seed, stage, first_index)
    with ThreadPoolExecutor(max_workers=1) as helper:
        upcoming = helper.submit(next, batches, None)
        while keep_going():
            current = upcoming.result()
            if current is None:
                break
            upcoming = helper.submit(next, batches, None)
            buffer, pieces, done_after = current
            predicted = np.argmax(model.logits(buffer, batch_size=len(buffer)), axis=1)
            for index, offset, take in pieces:
                counts[index] += np.bincount(predicted[offset : offset + take], minlength=counts.shape[1])
            done = done_after
            progress(done, n)
        upcoming.cancel()
    return counts, done


Piece = tuple[int, int, int]  # (sample index, first row in the batch, rows)


def _batches(
    x: np.ndarray, sampler: Sampler, draws: int, rows: int, seed: int, stage: int, first_index: int
) -> Iterator[tuple[np.ndarray, list[Piece], int]]:
    """Batches of perturbed inputs in two alternating buffers: (rows, pieces, samples complete)."""
    buffers = [np.empty((rows, *x.shape[1:]), np.float32) for _ in range(2)]
    sample, made, turn, rng = 0, 0, 0, None
    while sample < len(x):
        buffer, pieces, filled = buffers[turn % 2], [], 0
        while filled < rows and sample < len(x):
            take = min(draws - made, rows - filled)
            rng = rng or stream(seed, stage, first_index + sample)
            sampler.fill(rng, x[sample], buffer[filled : filled + take])
            pieces.append((sample, filled, take))
            filled, made = filled + take, made + take
            if made == draws:
                sample, made, rng = sample + 1, 0, None
        yield buffer[:filled], pieces, sample
        turn += 1
