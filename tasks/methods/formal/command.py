"""`nnassay verify`: one ONNX model, one VNN-LIB property, a verdict in the VNN-COMP format.

The timeout covers the whole process, start-up included, so this module imports only numpy at the
top; onnx, onnxruntime and the verifier are imported when needed (never Prefect, MLflow, pydantic).
A ``sat`` answer is re-executed on ONNX Runtime and checked against the property before it is
printed, so a wrong counterexample becomes ``unknown`` instead of a wrong answer.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnassay.tasks.methods.formal.property import Property

EXIT_OK, EXIT_INTERNAL, EXIT_INVALID = 0, 1, 2
VERDICTS = ("sat", "unsat", "unknown", "timeout")
BOX_TOL = 1e-6  # absolute slack on input bounds: float32 rounding of the file's decimal bounds
GRACE_S = 1.0  # the watchdog fires this long after the deadline if the verifier has not returned


class ModelFileError(ValueError):
    """The ONNX file cannot be read; the message names the file."""


@dataclass
class Answer:
    """What the command prints and writes."""

    verdict: str
    details: dict[str, Any] = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None


def main(argv: list[str]) -> int:
    """`nnassay verify` arguments (without the command word) -> exit code; argparse exits 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="nnassay verify",
        description="Check one VNN-LIB property on an ONNX model (VNN-COMP style). Prints sat, unsat, unknown or "
        "timeout on the first line. Exit 0 for any verdict; 1: the verifier crashed (verdict unknown); "
        "2: unreadable model or property.",
    )
    parser.add_argument("--onnx", type=Path, required=True, help="ONNX model (one input tensor).")
    parser.add_argument(
        "--vnnlib", type=Path, required=True, help="VNN-LIB property (the violation to look for)."
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=300.0, help="Seconds for the whole call, start-up included."
    )
    parser.add_argument(
        "--result-file", type=Path, default=None, help="Write the verdict here in the VNN-COMP format."
    )
    folders = [a for a in argv if not a.startswith("-") and Path(a).is_dir()]
    if folders and "--onnx" not in argv:  # a run folder: the user meant the records' integrity check
        parser.error(
            f"{folders[0]} is a folder; `nnassay verify` checks one VNN-LIB property on a model "
            f"(--onnx MODEL --vnnlib PROP). To check an assessment's records run: nnassay evidence verify {folders[0]}"
        )
    args = parser.parse_args(argv)
    return run_verify(args.onnx, args.vnnlib, args.timeout, args.result_file)


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def run_verify(onnx: Path, vnnlib: Path, timeout_s: float, result_file: Path | None) -> int:
    """Verify ``vnnlib`` on ``onnx`` within ``timeout_s`` (whole process); print and write the verdict.

    Returns the exit code: 0 for any verdict, 2 when an input file is unreadable (the message names
    the file, and the line for VNN-LIB errors), 1 when the verifier itself failed.
    """
    deadline = time.monotonic() + timeout_s - process_age_s()
    from nnassay.tasks.methods.formal.vnnlib import VnnlibError, parse_vnnlib

    try:
        n_inputs, n_outputs = model_sizes(onnx)
        prop = parse_vnnlib(vnnlib, n_inputs, n_outputs)
    except (ModelFileError, VnnlibError) as exc:
        print(f"nnassay verify: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finisher = _Finisher(result_file)
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0) + GRACE_S, finisher.on_timeout)
    watchdog.daemon = True
    watchdog.start()
    try:
        answer, code = _decide(onnx, prop, deadline), EXIT_OK
    except Exception as exc:  # the verifier crashed: say so, still leave a valid result file
        traceback.print_exc(file=sys.stderr)
        answer, code = (
            Answer("unknown", {"reason": f"verifier error: {type(exc).__name__}: {exc}"}),
            EXIT_INTERNAL,
        )
    watchdog.cancel()
    if not finisher.finish(answer):
        os._exit(EXIT_OK)  # the watchdog already answered 'timeout'
    return code


def _decide(onnx: Path, prop: Property, deadline: float) -> Answer:
    from nnassay.tasks.methods.formal.verifier import (
        verify,
    )  # imported late: parsing errors answer before torch loads

    remaining = max(deadline - time.monotonic(), 0.0)
    outcome = verify(onnx, prop, timeout_s=remaining, deadline=deadline)
    details = {
        k: getattr(outcome, k, None)
        for k in (
            "method",
            "time_s",
            "margin",
            "branches",
            "reason",
            "unsupported",
            "max_ort_deviation",
            "device",
        )
    }
    verdict = outcome.verdict if outcome.verdict in VERDICTS else "unknown"
    if verdict != "sat":
        return Answer(verdict, details)
    if outcome.counterexample is None:
        return Answer("unknown", {**details, "reason": "the verifier answered sat without a counterexample"})
    x = np.asarray(outcome.counterexample[0], dtype=np.float32).reshape(-1)
    y = run_model(onnx, x)
    problem = check_counterexample(prop, x, y)
    if problem:
        return Answer("unknown", {**details, "reason": f"counterexample rejected on re-execution: {problem}"})
    return Answer("sat", details, x, y)


class _Finisher:
    """Prints and writes the answer exactly once, whether the verifier or the watchdog comes first."""

    def __init__(self, result_file: Path | None) -> None:
        self.result_file = result_file
        self.lock = threading.Lock()
        self.done = False

    def finish(self, answer: Answer) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
            if self.result_file is not None:
                try:
                    write_result(self.result_file, answer)
                except OSError as exc:
                    print(f"nnassay verify: error: cannot write {self.result_file}: {exc}", file=sys.stderr)
            try:
                print(format_stdout(answer), flush=True)
            except BrokenPipeError:  # the reader of stdout has gone (say `| head -1`); the result file stands
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return True

    def on_timeout(self) -> None:
        if self.finish(Answer("timeout", {"reason": "the verifier did not return before the deadline"})):
            sys.stderr.flush()
            os._exit(EXIT_OK)


def format_stdout(answer: Answer) -> str:
    """The verdict on the first line, then ``key: value`` details."""
    lines = [answer.verdict]
    lines += [f"{k}: {v}" for k, v in answer.details.items() if v not in (None, "", [], ())]
    return "\n".join(lines)


def format_result(answer: Answer) -> str:
    """The VNN-COMP result file: the verdict, and for ``sat`` the counterexample assignment."""
    if answer.verdict != "sat" or answer.x is None or answer.y is None:
        return answer.verdict + "\n"
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(answer.x)]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(answer.y)]
    return "sat\n(" + "\n ".join(pairs) + ")\n"


def write_result(path: Path, answer: Answer) -> None:
    """Write the result file (temporary file, then rename: never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(format_result(answer))
    os.replace(tmp, path)


def check_counterexample(
    prop: Property, x: np.ndarray, y: np.ndarray, *, box_tol: float = BOX_TOL, out_tol: float = 0.0
) -> str | None:
    """None when ``x`` lies in some region's box and ``y`` satisfies one of its clauses; else why not."""
    x64, y64 = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x64.size != prop.n_inputs or y64.size != prop.n_outputs:
        return f"sizes {x64.size}/{y64.size}, expected {prop.n_inputs} inputs/{prop.n_outputs} outputs"
    if not (np.all(np.isfinite(x64)) and np.all(np.isfinite(y64))):
        return "non-finite values"
    inside = False
    for region in prop.regions:
        if np.all(x64 >= region.box.lower - box_tol) and np.all(x64 <= region.box.upper + box_tol):
            inside = True
            for clause in region.disjuncts:
                if all(float(h.coeffs @ y64) <= h.rhs + out_tol for h in clause):
                    return None
    return "the outputs satisfy no violation clause" if inside else "the input lies outside every input box"


def _graph_io(onnx_path: Path) -> tuple[list[int | None], list[int | None]]:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelFileError(
            f"{onnx_path}: cannot read the ONNX model: {str(exc).splitlines()[0][:200]}"
        ) from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or not model.graph.output:
        raise ModelFileError(
            f"{onnx_path}: expected one input and at least one output, found"
            f" {len(inputs)} inputs and {len(model.graph.output)} outputs"
        )

    def dims(value: Any) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    return dims(inputs[0]), dims(model.graph.output[0])


def _size(dims: list[int | None]) -> int | None:
    """Elements per sample: the batch axis (first, symbolic or 1) does not count."""
    rest = dims[1:] if dims and (dims[0] is None or dims[0] == 1) else dims
    known = [d for d in rest if d is not None]
    if not dims or len(known) != len(rest):
        return None
    return math.prod(known)


def model_sizes(onnx_path: Path) -> tuple[int | None, int | None]:
    """Number of input and output values per sample, None where the graph leaves it symbolic."""
    if not Path(onnx_path).is_file():
        raise ModelFileError(f"{onnx_path}: the ONNX model does not exist")
    in_dims, out_dims = _graph_io(onnx_path)
    return _size(in_dims), _size(out_dims)


def run_model(onnx_path: Path, x_flat: np.ndarray) -> np.ndarray:
    """The model's first output for one flattened input, on ONNX Runtime (CPU); a graph whose batch
    axis is frozen (e.g. at 8) gets a padded batch (``onnx_torch.run_ort``)."""
    from nnassay.tasks.engine.onnx_torch import ort_session, run_ort

    row = np.asarray(x_flat).reshape(1, -1)
    return np.asarray(run_ort(ort_session(onnx_path), row)[0]).reshape(-1)


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), so start-up counts against the timeout."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0
