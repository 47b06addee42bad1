"""VNN-LIB reader: the VNN-COMP dialect of SMT-LIB, normalised into a ``Property`` (boxes + DNF).

One regex pass tokenizes the file (thousands of lines for MNIST/CIFAR properties), a stack builds
the s-expressions, and the asserted formula is put into disjunctive normal form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

from nnassay.tasks.methods.formal.property import Box, Halfspace, Property, Region

MAX_CLAUSES = 20_000  # DNF clauses allowed before the parser gives up (exponential blow-up guard)

_TOKEN = re.compile(r"[()]|;[^\n]*|[^\s();]+")  # parenthesis, comment or atom; blanks skipped
_VAR = re.compile(r"([XY])_(\d+)\Z")
_COMPARE = {"<=", ">=", "<", ">", "="}


class VnnlibError(ValueError):
    """A VNN-LIB file that cannot be read; the message names the file, the line and the token."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line = path, line


@dataclass(slots=True)
class Atom:
    text: str
    pos: int  # character offset in the file


@dataclass(slots=True)
class SList:
    items: tuple[Atom | SList, ...]
    pos: int


Expr = Atom | SList


@dataclass(slots=True)
class Literal:
    """One comparison in normal form: an input bound, or an output halfspace ``coeffs.Y <= rhs``."""

    pos: int
    var: int = -1  # input index for a bound
    is_upper: bool = False
    value: float = 0.0
    coeffs: dict[int, float] | None = None  # output halfspace
    constant: bool | None = None  # comparison of constants: always true or always false


Clause = list[Literal]
Formula: TypeAlias = "tuple[str, list[Formula], int | None] | Literal"  # ('and'|'or', children, offset)


def parse_vnnlib(path: Path | str, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Read a VNN-LIB file into a ``Property``; sizes, when given, must match the declared variables.

    Strict comparisons (``<``, ``>``) are read as non-strict: the violation set grows by its boundary,
    which keeps an ``unsat`` proof sound (a ``sat`` answer on the boundary only is not a real one, so
    counterexamples must be checked against the strict file by whoever needs that distinction).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VnnlibError(str(path), None, f"cannot read the file: {exc}") from exc
    return _Reader(str(path)).read(text, n_inputs, n_outputs)


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.text = ""
        self.inputs: dict[int, int] = {}  # index -> offset of its declaration
        self.outputs: dict[int, int] = {}

    def error(self, pos: int | None, message: str) -> VnnlibError:
        """An error at a character offset of the file (None: the whole file)."""
        return VnnlibError(self.name, None if pos is None else self.line_of(pos), message)

    def line_of(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def read(self, text: str, n_inputs: int | None, n_outputs: int | None) -> Property:
        asserts: list[SList] = []
        for expr in self.sexprs(text):
            self.command(expr, asserts)
        n_in, n_out = self.sizes(n_inputs, n_outputs)
        try:
            clauses = self.dnf_all([self.formula(a.items[1]) for a in asserts])
        except RecursionError:
            raise self.error(None, "formula nested too deeply") from None
        regions = self.regions(clauses, n_in, n_out, asserts)
        return Property(regions=tuple(regions), n_inputs=n_in, n_outputs=n_out, source=self.name)

    def sexprs(self, text: str) -> list[Expr]:
        """All top-level s-expressions, built in one pass over the regex tokens."""
        self.text = text
        opened: list[int] = []
        frames: list[list[Expr]] = []
        top: list[Expr] = []
        for match in _TOKEN.finditer(text):
            token = match.group()
            if token == "(":
                frames.append([])
                opened.append(match.start())
            elif token == ")":
                if not frames:
                    raise self.error(match.start(), "unexpected token ')': no '(' is open")
                node = SList(tuple(frames.pop()), opened.pop())
                (frames[-1] if frames else top).append(node)
            elif token[0] != ";":
                (frames[-1] if frames else top).append(Atom(token, match.start()))
        if frames:
            raise self.error(
                opened[-1],
                f"unbalanced parentheses: the '(' opened here is never closed"
                f" ({len(frames)} open at the end of the file)",
            )
        return top

    def command(self, expr: Expr, asserts: list[SList]) -> None:
        if isinstance(expr, Atom):
            raise self.error(expr.pos, f"unexpected token {expr.text!r} outside parentheses")
        head = self.head(expr)
        if head == "declare-const":
            self.declare(expr, expr.items[1:])
        elif head == "declare-fun":  # (declare-fun X_0 () Real)
            if len(expr.items) != 4 or not isinstance(expr.items[2], SList) or expr.items[2].items:
                raise self.error(expr.pos, "expected (declare-fun NAME () Real)")
            self.declare(expr, (expr.items[1], expr.items[3]))
        elif head == "assert":
            if len(expr.items) != 2:
                raise self.error(expr.pos, f"'assert' takes one formula, got {len(expr.items) - 1}")
            asserts.append(expr)
        elif head not in ("set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"):
            raise self.error(expr.pos, f"unknown command {head!r}; expected declare-const or assert")

    def head(self, expr: SList) -> str:
        if not expr.items or not isinstance(expr.items[0], Atom):
            raise self.error(expr.pos, "unexpected token '(': expected an operator name")
        return expr.items[0].text

    def declare(self, expr: SList, rest: tuple[Expr, ...]) -> None:
        if len(rest) != 2 or not all(isinstance(r, Atom) for r in rest):
            raise self.error(expr.pos, "expected (declare-const NAME Real)")
        name, sort = rest[0], rest[1]
        assert isinstance(name, Atom) and isinstance(sort, Atom)
        if sort.text != "Real":
            raise self.error(sort.pos, f"unexpected token {sort.text!r}: variables must be Real")
        match = _VAR.match(name.text)
        if not match:
            raise self.error(
                name.pos,
                f"unexpected token {name.text!r}: variables are named X_<i> (inputs) or Y_<j> (outputs)",
            )
        table = self.inputs if match.group(1) == "X" else self.outputs
        index = int(match.group(2))
        if index in table:
            raise self.error(
                name.pos, f"{name.text} is declared twice (first at line {self.line_of(table[index])})"
            )
        table[index] = name.pos

    def sizes(self, n_inputs: int | None, n_outputs: int | None) -> tuple[int, int]:
        n_in, n_out = len(self.inputs), len(self.outputs)
        for letter, table, n, given in (
            ("X", self.inputs, n_in, n_inputs),
            ("Y", self.outputs, n_out, n_outputs),
        ):
            kind = "inputs" if letter == "X" else "outputs"
            if n == 0:
                raise self.error(None, f"no {kind} declared: expected (declare-const {letter}_0 Real) ...")
            missing = sorted(set(range(n)) - set(table))
            if missing:
                raise self.error(
                    table[max(table)],
                    f"{letter}_{max(table)} is declared but {letter}_"
                    f"{missing[0]} is not: {kind} must be numbered 0..n-1",
                )
            if given is not None and given != n:
                raise self.error(
                    table[0],
                    f"the property declares {n} {kind} ({letter}_0..{letter}_{n - 1})"
                    f" but the model has {given} {kind}",
                )
        return n_in, n_out

    # formulas ------------------------------------------------------------------------------

    def formula(self, expr: Expr) -> Formula:
        """A formula as ('and'|'or', children) or a Literal."""
        if isinstance(expr, Atom):
            if expr.text in ("true", "false"):
                return Literal(pos=expr.pos, constant=expr.text == "true")
            raise self.error(expr.pos, f"unexpected token {expr.text!r}: expected a formula in parentheses")
        op = self.head(expr)
        args = expr.items[1:]
        if op in ("and", "or"):
            if not args:
                return Literal(pos=expr.pos, constant=op == "and")
            return (op, [self.formula(a) for a in args], expr.pos)
        if op in _COMPARE:
            if len(args) != 2:
                raise self.error(expr.pos, f"'{op}' takes two terms, got {len(args)}")
            return self.compare(op, args[0], args[1], expr.pos)
        raise self.error(expr.pos, f"unknown operator {op!r}; expected and, or, <=, >=, <, >, =")

    def compare(self, op: str, left: Expr, right: Expr, pos: int) -> Formula:
        lx, ly, lc = self.term(left)
        rx, ry, rc = self.term(right)
        if op == "=":
            return (
                "and",
                [self.literal(lx, ly, lc, rx, ry, rc, pos), self.literal(rx, ry, rc, lx, ly, lc, pos)],
                pos,
            )
        if op in (">=", ">"):
            return self.literal(rx, ry, rc, lx, ly, lc, pos)
        return self.literal(lx, ly, lc, rx, ry, rc, pos)

    def literal(
        self,
        lx: dict[int, float],
        ly: dict[int, float],
        lc: float,
        rx: dict[int, float],
        ry: dict[int, float],
        rc: float,
        pos: int,
    ) -> Literal:
        """``left <= right`` as ``x + y <= k``, then as a bound or a halfspace."""
        x = _combine(lx, rx)
        y = _combine(ly, ry)
        k = rc - lc
        if x and y:
            raise self.error(
                pos,
                "a comparison mixes inputs X and outputs Y; only input bounds and"
                " output conditions are supported",
            )
        if len(x) > 1:
            raise self.error(
                pos,
                f"a linear constraint over several inputs ({', '.join(f'X_{i}' for i in sorted(x))})"
                " is not supported; inputs may only be bounded one at a time",
            )
        if x:
            ((index, coeff),) = x.items()
            return Literal(pos=pos, var=index, is_upper=coeff > 0, value=k / coeff)
        if y:
            return Literal(pos=pos, coeffs=y, value=k)
        return Literal(pos=pos, constant=k >= 0.0)

    def term(self, expr: Expr) -> tuple[dict[int, float], dict[int, float], float]:
        """A linear term as (X coefficients, Y coefficients, constant)."""
        if isinstance(expr, Atom):
            match = _VAR.match(expr.text)
            if match:
                table = self.inputs if match.group(1) == "X" else self.outputs
                index = int(match.group(2))
                if index not in table:
                    raise self.error(expr.pos, f"unknown variable {expr.text!r}: it is not declared")
                return ({index: 1.0}, {}, 0.0) if match.group(1) == "X" else ({}, {index: 1.0}, 0.0)
            return {}, {}, self.number(expr)
        op = self.head(expr)
        parts = [self.term(a) for a in expr.items[1:]]
        if not parts:
            raise self.error(expr.pos, f"'{op}' needs at least one term")
        if op == "+" or (op == "-" and len(parts) == 1):
            sign = -1.0 if op == "-" else 1.0
            return _sum(parts, [sign] * len(parts))
        if op == "-":
            return _sum(parts, [1.0] + [-1.0] * (len(parts) - 1))
        if op == "*":
            scale, varying = 1.0, None
            for x, y, c in parts:
                if x or y:
                    if varying is not None:
                        raise self.error(expr.pos, "'*' of two variables is not linear; not supported")
                    varying = (x, y, c)
                else:
                    scale *= c
            x, y, c = varying or ({}, {}, 1.0)
            return ({i: v * scale for i, v in x.items()}, {i: v * scale for i, v in y.items()}, c * scale)
        raise self.error(expr.pos, f"unknown operator {op!r} in a term; expected +, -, * or a variable")

    def number(self, atom: Atom) -> float:
        try:
            value = float(atom.text)
        except ValueError:
            raise self.error(
                atom.pos,
                f"unexpected token {atom.text!r}: expected a number or a declared variable X_<i> / Y_<j>",
            ) from None
        if not np.isfinite(value):
            raise self.error(atom.pos, f"unexpected token {atom.text!r}: numbers must be finite")
        return value

    # normal form ---------------------------------------------------------------------------

    def dnf_all(self, formulas: list[Formula]) -> list[Clause]:
        return self.dnf(("and", formulas, None))

    def dnf(self, node: Formula) -> list[Clause]:
        if isinstance(node, Literal):
            if node.constant is True:
                return [[]]
            if node.constant is False:
                return []
            return [[node]]
        op, children, pos = node
        parts = [self.dnf(c) for c in children]
        if op == "or":
            out = [clause for part in parts for clause in part]
            self.guard(len(out), pos)
            return out
        single: Clause = []
        multi = []
        for child, part in zip(children, parts, strict=True):
            if len(part) == 1:
                single.extend(part[0])
            else:
                multi.append((child, part))
        result: list[Clause] = [single]
        for child, part in multi:
            self.guard(len(result) * len(part), child[2] if isinstance(child, tuple) else pos)
            result = [a + b for a in result for b in part]
        return result

    def guard(self, count: int, pos: int | None) -> None:
        if count > MAX_CLAUSES:
            raise self.error(
                pos,
                f"the formula expands to {count} cases in disjunctive normal form"
                f" (limit {MAX_CLAUSES}) at this disjunction; split the property into"
                " several files",
            )

    def regions(self, clauses: list[Clause], n_in: int, n_out: int, asserts: list[SList]) -> list[Region]:
        by_box: dict[bytes, tuple[Box, dict[bytes, tuple[Halfspace, ...]]]] = {}
        last_pos = asserts[-1].pos if asserts else None
        for clause in clauses:
            lower, upper = np.full(n_in, -np.inf), np.full(n_in, np.inf)
            halfspaces = []
            for lit in clause:
                if lit.constant is not None:
                    continue
                if lit.coeffs is not None:
                    coeffs = np.zeros(n_out)
                    for j, v in lit.coeffs.items():
                        coeffs[j] = v
                    halfspaces.append(Halfspace(coeffs=coeffs, rhs=float(lit.value)))
                elif lit.is_upper:
                    upper[lit.var] = min(upper[lit.var], lit.value)
                else:
                    lower[lit.var] = max(lower[lit.var], lit.value)
            if np.any(lower > upper):
                continue  # an empty box cannot hold a counterexample
            self.check_bounded(lower, upper, clause, last_pos)
            key = lower.tobytes() + upper.tobytes()
            entry = by_box.setdefault(key, (Box(lower=lower, upper=upper), {}))
            entry[1].setdefault(
                b"".join(h.coeffs.tobytes() + np.float64(h.rhs).tobytes() for h in halfspaces),
                tuple(halfspaces),
            )
        if not by_box:
            raise self.error(
                last_pos,
                "the input set is empty: every case has contradictory input bounds (or a false condition)",
            )
        return [Region(box=box, disjuncts=tuple(d.values())) for box, d in by_box.values()]

    def check_bounded(self, lower: np.ndarray, upper: np.ndarray, clause: Clause, pos: int | None) -> None:
        for side, values in (("lower", lower), ("upper", upper)):
            missing = np.flatnonzero(~np.isfinite(values))
            if missing.size:
                where = min((lit.pos for lit in clause), default=pos)
                names = ", ".join(f"X_{i}" for i in missing[:5]) + (" ..." if missing.size > 5 else "")
                raise self.error(
                    where,
                    f"{names} has no {side} bound in the input set starting here"
                    f" ({missing.size} inputs unbounded); every X_i needs both bounds",
                )


def _combine(left: dict[int, float], right: dict[int, float]) -> dict[int, float]:
    """Coefficients of ``left - right`` with zeros dropped."""
    out = dict(left)
    for i, v in right.items():
        out[i] = out.get(i, 0.0) - v
    return {i: v for i, v in out.items() if v != 0.0}


def _sum(
    parts: list[tuple[dict[int, float], dict[int, float], float]], signs: list[float]
) -> tuple[dict[int, float], dict[int, float], float]:
    x: dict[int, float] = {}
    y: dict[int, float] = {}
    c = 0.0
    for (px, py, pc), s in zip(parts, signs, strict=True):
        for i, v in px.items():
            x[i] = x.get(i, 0.0) + s * v
        for i, v in py.items():
            y[i] = y.get(i, 0.0) + s * v
        c += s * pc
    return x, y, c
