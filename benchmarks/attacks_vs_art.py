"""Our PGD and Square Attack against IBM ART's on the bundled digits model, and corruption throughput.

Run: python benchmarks/attacks_vs_art.py [--samples 200] [--steps 50] [--restarts 2] [--queries 1000]
Needs the optional 'bench' extra (adversarial-robustness-toolbox). Prints one table per part.
ART gets the same model as a torch module built by our ONNX -> torch executor, the same images,
the same eps, step size, steps, restarts and query budget. Every adversarial input of both tools
is judged on ONNX Runtime (the deployed model), so robust accuracies are comparable.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnassay.schemas.goals import ModelSpec
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.corruptions import CORRUPTION_FUNCTIONS, corrupt
from nnassay.tasks.methods.registry import RunContext, get_method

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def context(model: ModelRunner, x: np.ndarray, y: np.ndarray, threat: Any, seed: int) -> RunContext:
    out = Path(tempfile.mkdtemp(prefix="bench-"))
    data = Dataset(x=x, y=y, layout=model.layout, kind="image", path=DIGITS / "test.npz", sha256="-")
    return RunContext(
        model=model,
        data=data,
        threat=threat,
        metric="robust_accuracy",
        seed=seed,
        out_dir=out,
        run_dir=out,
        time_s=3600.0,
    )


def robust_accuracy(model: ModelRunner, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, eps: float) -> float:
    """Correct on the clean input and on the adversarial one (ONNX Runtime), adversarial inside the ball."""
    inside = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1) <= eps * (1 + 1e-5)
    wrong = (model.predict(x_adv) != y) & inside
    return float(((model.predict(x) == y) & ~wrong).mean())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def ours(
    model: ModelRunner, x: np.ndarray, y: np.ndarray, name: str, eps: float, overrides: dict[str, Any]
) -> tuple[float, float]:
    from nnassay.schemas.threats import LinfBall

    ctx = context(model, x, y, LinfBall(kind="linf_ball", eps=eps, sweep=[eps]), seed=0)
    method = get_method(name)
    outcome, seconds = timed(lambda: method.run(ctx, method.params_for(ctx.threat, overrides)))
    return outcome.metrics["robust_accuracy"].value, seconds


def art_classifier(model: ModelRunner) -> Any:
    from art.estimators.classification import PyTorchClassifier

    module = model.torch_module().eval()
    return PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=model.n_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def art_pgd(
    model: ModelRunner, x: np.ndarray, y: np.ndarray, eps: float, steps: int, restarts: int
) -> tuple[float, float]:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    attack = ProjectedGradientDescentPyTorch(
        art_classifier(model),
        norm=np.inf,
        eps=eps,
        eps_step=2.5 * eps / steps,
        max_iter=steps,
        num_random_init=restarts,
        batch_size=len(x),
        verbose=False,
    )
    x_adv, seconds = timed(lambda: attack.generate(x=x, y=y))
    return robust_accuracy(model, x, x_adv.astype(np.float32), y, eps), seconds


def art_square(
    model: ModelRunner, x: np.ndarray, y: np.ndarray, eps: float, queries: int
) -> tuple[float, float]:
    from art.attacks.evasion import SquareAttack

    attack = SquareAttack(
        art_classifier(model),
        norm=np.inf,
        eps=eps,
        max_iter=queries,
        p_init=0.05,
        nb_restarts=1,
        batch_size=len(x),
        verbose=False,
    )
    x_adv, seconds = timed(lambda: attack.generate(x=x, y=y))
    return robust_accuracy(model, x, x_adv.astype(np.float32), y, eps), seconds


def attacks_table(args: argparse.Namespace) -> None:
    model = ModelRunner(
        ModelSpec(path=DIGITS / "model.onnx", layout="NCHW", value_range=(0.0, 1.0)), prefer_cuda=False
    )
    with np.load(DIGITS / "test.npz") as data:
        x, y = data["x"][: args.samples].astype(np.float32), data["y"][: args.samples].astype(np.int64)
    print(f"clean accuracy on {len(x)} images: {float((model.predict(x) == y).mean()):.3f}")
    print(
        f"{'attack':<14}{'eps':>6}{'ours RA':>9}{'ART RA':>8}{'ours s':>9}{'ART s':>8}{'ART/ours time':>15}"
    )
    pgd = {"steps": args.steps, "restarts": args.restarts}
    for eps in (0.1, 0.2):
        runs = {
            "PGD L-inf": (
                lambda e=eps: ours(model, x, y, "empirical.pgd_linf", e, pgd),
                lambda e=eps: art_pgd(model, x, y, e, args.steps, args.restarts),
            ),
            "Square L-inf": (
                lambda e=eps: ours(
                    model, x, y, "empirical.square_linf", e, {"queries": args.queries, "p_init": 0.05}
                ),
                lambda e=eps: art_square(model, x, y, e, args.queries),
            ),
        }
        for label, (mine, theirs) in runs.items():
            (ra_ours, t_ours), (ra_art, t_art) = mine(), theirs()
            print(
                f"{label:<14}{eps:>6.2f}{ra_ours:>9.3f}{ra_art:>8.3f}{t_ours:>9.2f}{t_art:>8.2f}"
                f"{t_art / t_ours:>14.2f}x"
            )


def corruption_table(images: int = 1000) -> None:
    with np.load(DIGITS / "test.npz") as data:
        digits = np.resize(data["x"].astype(np.float32), (images, 1, 8, 8))
    colour = np.random.default_rng(0).random((images, 32, 32, 3)).astype(np.float32)
    print(f"{'corruption':<18}{'8x8 grey img/s':>16}{'32x32 RGB img/s':>17}")
    for name in CORRUPTION_FUNCTIONS:
        rates = []
        for batch, layout in ((digits, "NCHW"), (colour, "NHWC")):
            _, seconds = timed(
                lambda b=batch, lay=layout, c=name: corrupt(
                    b, c, 3, rng=np.random.default_rng(0), layout=lay, value_range=(0.0, 1.0)
                )
            )
            rates.append(images / seconds)
        print(f"{name:<18}{rates[0]:>16,.0f}{rates[1]:>17,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-corruptions", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    attacks_table(args)
    if not args.skip_corruptions:
        corruption_table()


if __name__ == "__main__":
    main()
