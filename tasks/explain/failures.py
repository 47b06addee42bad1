"""Which samples of a goal failed, in one shape for every method family.

Where the flow finds them (``MethodResult`` of the goal's tests):
- attacks (``empirical.*`` ball threats): artifact ``<attack>_adversarial.npz`` with ``x_adv`` and
  ``index``, also ``details['successful_indices']``: ``failures_from_npz``;
- formal local robustness: artifact ``counterexamples.npz`` (``x_adv``, ``index``, ``label``), also
  ``details['falsified_indices']``: ``failures_from_npz``;
- clean accuracy, noise and other sampled threats: ``details['per_sample'][metric]`` packed flags
  (``unpack_outcomes``): failures are ``~accuracy`` or ``label_flip_rate`` flags, ``failures_from_flags``;
- geometric worst case: ``details['non_robust_indices']``: ``GoalFailures(goal_id, np.array(indices))``;
- invalid input (confident garbage): nothing per sample is stored; regenerate the finite cases with
  ``invalid_inputs`` (constant, random_noise) and pass them as ``inputs`` with ``against="runner_up"``
  (the test label of the row they came from means nothing for garbage).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class GoalFailures:
    """Per-sample failures of one goal: failed rows, and the failing inputs when they differ from
    the rows (adversarial examples, counterexamples); ``correct``: rows handled right, for contrast
    (None: the rows the model classifies correctly); ``against``: attribute the chosen class against
    the true class (default) or, for inputs without a meaningful label, against the runner-up;
    ``origins``: what made each failing input (parallel to ``indices``); ``available``: how many
    failures there were when only some are passed (default: the distinct rows); ``source``: where
    they were read (test, file or details), for the evidence."""

    goal_id: str
    indices: np.ndarray
    inputs: np.ndarray | None = None
    correct: np.ndarray | None = None
    against: Literal["true", "runner_up"] = "true"
    origins: tuple[str, ...] | None = None
    available: int | None = None
    source: str | None = None


def failures_from_npz(goal_id: str, archive: Path | bytes) -> GoalFailures:
    """From an attack's ``<attack>_adversarial.npz`` or the formal ``counterexamples.npz``: arrays
    ``x_adv`` (data space) and ``index`` (rows of the test data)."""
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    with np.load(source, allow_pickle=False) as npz:
        return GoalFailures(goal_id, np.asarray(npz["index"], np.int64), np.asarray(npz["x_adv"], np.float32))


def failures_from_flags(goal_id: str, failed: np.ndarray) -> GoalFailures:
    """From per-sample failure flags (e.g. ``~unpack_outcomes(details['per_sample']['accuracy'])``)."""
    return GoalFailures(goal_id, np.flatnonzero(np.asarray(failed, bool)))
