"""Run one step in a child process, so that a native crash costs one test, not the whole run.

Steps that run native code on converted or user models (float16/int8 variants, ONNX Runtime session
creation, quantisation, large verification) can die by a signal: a segfault or abort inside ONNX
Runtime, or the kernel's out-of-memory killer. ``run_isolated`` runs such a step in a fresh
``spawn`` child (never ``fork``: torch and ONNX Runtime keep thread pools that a forked copy would
inherit half-locked) and turns every way the child can end into a value or one exception that names
the step:

- the step returned: its value (sent back pickled by our own child through a pipe, never read from a file);
- the step raised: the same exception, re-raised here, with the child's traceback as a note;
- the child died by a signal, or exited without answering: ``ChildCrashed`` naming the signal, the
  step and the last lines the child wrote to stderr (with ``faulthandler``'s Python stack);
- the step ran out of memory under ``memory_limit_bytes``: ``ChildMemoryError`` (also a ``MemoryError``);
- the time ran out: the child and its own children are killed and ``ChildTimeout`` is raised.

Cost: a spawn child starts a new interpreter and imports only the step's module (and what it
imports), so a step that needs ONNX Runtime should live in a module that does not import torch
(``ort_check.isolated_session_check`` imports onnxruntime and numpy only).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar, cast

from nnassay.tasks.errors import shown

T = TypeVar("T")
STDERR_TAIL_LINES = 25
EXIT_GRACE_S = 10.0  # after answering, the child gets this long to exit before it is killed
_CONTEXT = multiprocessing.get_context("spawn")
_M_ARENA_MAX = -8  # glibc mallopt parameter: bounds the per-thread arenas that inflate address space
_OOM_MARKERS = ("can't allocate memory", "out of memory", "bad_alloc", "failed to allocate memory")


class IsolationError(RuntimeError):
    """A step run in a child process did not return a value."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class ChildCrashed(IsolationError):  # noqa: N818 (the name the issue and callers use)
    """The child died by a signal (segfault, abort, kill) or exited without answering."""

    def __init__(
        self, message: str, *, step: str, signal_name: str | None, exitcode: int | None, stderr_tail: str
    ) -> None:
        super().__init__(message, step=step)
        self.signal_name = signal_name
        self.exitcode = exitcode
        self.stderr_tail = stderr_tail


class ChildTimeout(IsolationError):  # noqa: N818 (the name the issue and callers use)
    """The step ran past its time limit; the child and its children were killed."""

    def __init__(self, message: str, *, step: str, timeout_s: float) -> None:
        super().__init__(message, step=step)
        self.timeout_s = timeout_s


class ChildMemoryError(IsolationError, MemoryError):
    """The step ran out of memory in the child (under ``memory_limit_bytes`` when one was set)."""

    def __init__(self, message: str, *, step: str, limit_bytes: int | None) -> None:
        super().__init__(message, step=step)
        self.limit_bytes = limit_bytes


class ChildStepError(IsolationError):
    """The step raised an exception that could not be sent back as itself (its type and text are kept)."""

    def __init__(self, message: str, *, step: str, error_type: str, child_traceback: str) -> None:
        super().__init__(message, step=step)
        self.error_type = error_type
        self.child_traceback = child_traceback


def run_isolated(
    fn: Callable[..., T],
    *args: Any,
    step: str,
    timeout_s: float,
    memory_limit_bytes: int | None = None,
    preload: Sequence[str] = (),
) -> T:
    """Run ``fn(*args)`` in a spawn child process and return its value.

    Args:
        fn: a module-level function (the child imports it by name; lambdas and closures do not work).
        args: picklable arguments.
        step: what the step does, for messages ("float16 session for model.onnx").
        timeout_s: wall-clock limit from the start of the child, imports included.
        memory_limit_bytes: address space the step may add (``RLIMIT_AS`` in the child, on top of
            what the interpreter and ``preload`` hold when the limit is set); None: no limit.
        preload: modules the child imports before the limit is set (e.g. ``["onnxruntime"]``), so
            their mapped libraries do not count against ``memory_limit_bytes``.

    Raises:
        ChildCrashed, ChildTimeout, ChildMemoryError, ChildStepError; or the step's own exception.
    """
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    handle, stderr_name = tempfile.mkstemp(prefix="nnassay-child-", suffix=".stderr")
    os.close(handle)
    stderr_path = Path(stderr_name)
    child = _CONTEXT.Process(
        target=_child_main,
        args=(sender, fn, args, memory_limit_bytes, tuple(preload), stderr_name),
        name=f"nnassay-isolated: {step}"[:120],
    )
    try:
        with _children_allowed():
            child.start()
        sender.close()
        message = _await_answer(child, receiver, step=step, timeout_s=timeout_s)
        if message is None:
            raise _crash(child, step, stderr_path)
        return cast(T, _unpack(message, step=step, limit=memory_limit_bytes))
    finally:
        if child.is_alive():
            kill_tree(child.pid)
        child.join(timeout=EXIT_GRACE_S)
        receiver.close()
        stderr_path.unlink(missing_ok=True)


def _await_answer(
    child: BaseProcess, receiver: Connection, *, step: str, timeout_s: float
) -> tuple[str, Any, str, str] | None:
    """The child's message, or None when it ended without one; ``ChildTimeout`` when time ran out."""
    ready = wait([receiver, child.sentinel], timeout=timeout_s)
    if not ready:
        kill_tree(child.pid)
        raise ChildTimeout(
            f"step {step!r} ran longer than its {timeout_s:g} s limit; its process (and the processes "
            "it started) was killed",
            step=step,
            timeout_s=timeout_s,
        )
    if receiver.poll():
        with contextlib.suppress(EOFError, OSError):
            answer = receiver.recv()
            child.join(timeout=EXIT_GRACE_S)  # the step is done: a crash at exit does not undo it
            return cast(tuple[str, Any, str, str], answer)
    child.join(timeout=EXIT_GRACE_S)
    return None


def _unpack(message: tuple[str, Any, str, str], *, step: str, limit: int | None) -> Any:
    kind, payload, error_type, text = message
    if kind == "ok":
        return payload
    if kind == "memory":
        where = f" under its limit of {format_bytes(limit)} of address space" if limit else ""
        raise ChildMemoryError(
            f"step {step!r} ran out of memory{where} ({error_type}: {text})", step=step, limit_bytes=limit
        )
    if isinstance(payload, BaseException):
        payload.add_note(f"raised in the isolated child running step {step!r}:\n{text}")
        raise payload
    raise ChildStepError(
        f"step {step!r} raised {error_type} in its child process: {_last_line(text)}",
        step=step,
        error_type=error_type,
        child_traceback=text,
    )


def _crash(child: BaseProcess, step: str, stderr_path: Path) -> ChildCrashed:
    code = child.exitcode
    tail = stderr_tail(stderr_path)
    seen = f"; last lines of its stderr:\n{tail}" if tail else "; it wrote nothing to stderr"
    if code is not None and code < 0:
        name = signal_name(-code)
        why = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        text = f"step {step!r} crashed: its child process died by {name}{why}{seen}"
        return ChildCrashed(text, step=step, signal_name=name, exitcode=code, stderr_tail=tail)
    if not tail:
        seen += " (a failure while the child started, e.g. importing the step's module, is on this process's stderr)"
    text = f"step {step!r} crashed: its child process exited with code {code} without answering{seen}"
    return ChildCrashed(text, step=step, signal_name=None, exitcode=code, stderr_tail=tail)


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11, ``signal 99`` for a number Python does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES, max_bytes: int = 16_384) -> str:
    """The last ``lines`` lines of a child's stderr file, with hidden characters escaped."""
    try:
        with path.open("rb") as stream:
            stream.seek(max(path.stat().st_size - max_bytes, 0))
            data = stream.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip()
    return shown("\n".join(text.splitlines()[-lines:]), keep_newlines=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def kill_tree(pid: int | None) -> None:
    """Kill a process, its process group and every descendant (SIGKILL); gone ones are ignored."""
    if pid is None:
        return
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:  # the child made itself a group leader (see _child_main)
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a Dask worker, a multiprocessing pool worker) start the child.

    multiprocessing refuses children in daemonic processes so that none is orphaned when the daemon
    exits; ``run_isolated`` always kills and joins its child before returning, which keeps that promise.
    """
    config: dict[str, Any] = getattr(multiprocessing.current_process(), "_config", {})
    daemonic = bool(config.get("daemon"))
    if daemonic:
        config["daemon"] = False
    try:
        yield
    finally:
        if daemonic:
            config["daemon"] = True


# ---------------------------------------------------------------- the child side


def _child_main(
    sender: Connection,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    memory_limit_bytes: int | None,
    preload: tuple[str, ...],
    stderr_name: str,
) -> None:
    """Entry point of the child: own process group, stderr to the file, limits, run, answer."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a group of its own, so a timeout kills what the step started as well
    _redirect_stderr(stderr_name)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    for module in preload:
        importlib.import_module(module)
    if memory_limit_bytes is not None:
        _limit_address_space(memory_limit_bytes)
    try:
        message: tuple[str, Any, str, str] = ("ok", fn(*args), "", "")
    except BaseException as exc:  # noqa: BLE001 (everything the step raises goes back to the parent)
        _lift_limit()
        message = _describe(exc)
    try:
        sender.send(message)
    except Exception as exc:  # noqa: BLE001 (an unpicklable value or exception)
        sender.send(("raised", None, type(exc).__name__, f"the step's answer could not be sent back: {exc}"))
    sender.close()
    sys.stderr.flush()


def _describe(exc: BaseException) -> tuple[str, Any, str, str]:
    text = "".join(traceback.format_exception(exc))
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or _says_out_of_memory(exc):
        return ("memory", None, name, _last_line(str(exc)) or "no message")
    try:
        payload: Any = exc if type(pickle.loads(pickle.dumps(exc))) is type(exc) else None
    except Exception:  # noqa: BLE001 (exceptions with required keyword arguments do not round-trip)
        payload = None
    return ("raised", payload, name, text)


def _says_out_of_memory(exc: BaseException) -> bool:
    """torch's CPU allocator raises RuntimeError("... can't allocate memory ..."), ORT a bad_alloc."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | OSError) and any(marker in text for marker in _OOM_MARKERS)


def _redirect_stderr(path: str) -> None:
    """Point file descriptor 2 (native code's stderr too) at ``path``."""
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)


def _limit_address_space(extra_bytes: int) -> None:
    """Cap the address space at what is mapped now plus ``extra_bytes`` (soft limit, liftable)."""
    import ctypes
    import resource

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)  # thread arenas reserve 64 MiB each
    mapped = _mapped_bytes()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = mapped + extra_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _lift_limit() -> None:
    """Raise the soft address-space limit back to the hard one, so the answer can be sent."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _mapped_bytes() -> int:
    """Virtual size of this process (what ``RLIMIT_AS`` counts)."""
    with open("/proc/self/statm") as stream:
        pages = int(stream.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def format_bytes(n: float | None) -> str:
    """``41.9 GB`` style (decimal units, as the issue and psutil's users read them)."""
    if n is None:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} TB"


__all__ = [
    "ChildCrashed",
    "ChildStepError",
    "ChildMemoryError",
    "ChildTimeout",
    "IsolationError",
    "format_bytes",
    "kill_tree",
    "run_isolated",
    "signal_name",
    "stderr_tail",
]
