"""Steps for tests/test_isolation.py that misbehave on purpose, run in spawn children.

They live in their own light module (numpy at most) because a spawn child imports the module of the
function it runs; a test module would drag pytest and torch into every child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def add(a: int, b: int) -> int:
    """A well-behaved step."""
    return a + b


def segfault() -> None:
    """Die by SIGSEGV, as a crash inside native code does."""
    os.kill(os.getpid(), signal.SIGSEGV)


def abort() -> None:
    """Die by SIGABRT (a failed C++ assertion, std::terminate)."""
    os.abort()


def kill_self() -> None:
    """Die by SIGKILL, as under the kernel's out-of-memory killer."""
    os.kill(os.getpid(), signal.SIGKILL)


def hog_memory(total_bytes: int, chunk_bytes: int = 50_000_000) -> int:
    """Allocate and touch memory chunk by chunk until ``total_bytes`` are held."""
    held: list[bytearray] = []
    while len(held) * chunk_bytes < total_bytes:
        block = bytearray(chunk_bytes)
        block[::4096] = b"x" * len(block[::4096])
        held.append(block)
    return len(held)


def hang(seconds: float) -> None:
    """Sleep past any reasonable timeout."""
    time.sleep(seconds)


def hang_with_grandchild(pid_file: str, seconds: float) -> None:
    """Start a grandchild that would outlive a plain kill of this process, write its pid, then hang."""
    grandchild = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    with open(pid_file, "w") as stream:
        stream.write(str(grandchild.pid))
    time.sleep(seconds)


def raise_value_error(text: str) -> None:
    """Raise an ordinary exception."""
    raise ValueError(text)


class NeedsKeywordError(Exception):
    """An exception that does not survive pickling (a required keyword argument)."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


def raise_unpicklable(text: str) -> None:
    """Raise an exception that cannot be sent back as itself."""
    raise NeedsKeywordError(text, where="here")


def write_stderr_then_abort(text: str) -> None:
    """Write a line to stderr as native code would, then abort."""
    os.write(2, text.encode() + b"\n")
    os.abort()
