"""Step 1, stating goals: read and validate the assessment spec (YAML or JSON, parsed safely).

A spec is untrusted input: it is refused above ``MAX_SPEC_BYTES``, YAML aliases may add at most
``MAX_ALIAS_NODES`` nodes when expanded (no "billion laughs"), nesting is bounded, and every error
names the line and column, never the file's text.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nnassay.schemas.common import Record
from nnassay.schemas.goals import AssessmentSpec
from nnassay.tasks.errors import SpecError
from nnassay.tasks.io.files import human_bytes
from nnassay.tasks.io.registry_models import resolve_registered

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: the bundled example is 14 KB
MAX_ALIASES = 200  # alias uses in one spec
MAX_ALIAS_NODES = 10_000  # nodes the aliases may add once expanded
MAX_DEPTH = 64  # nesting of mappings and lists
_FIX_SYNTAX = "fix the syntax at the line and column shown"


def read_spec(path: Path, *, model_uri: str | None = None, registry_uri: str | None = None) -> AssessmentSpec:
    """Parse and validate a spec file; relative paths resolve against its folder; a registry model
    (``model_uri``, else a models:/ model.path) is downloaded from the registry at ``registry_uri``.

    Raises:
        SpecError: naming the file, the first field at fault (all fields listed) and the fix.
    """
    try:
        raw = _read_mapping(path)
        try:
            spec = AssessmentSpec.model_validate(raw)
        except ValidationError as exc:
            raise spec_error(path, exc, raw) from None
    except (MemoryError, RecursionError) as exc:
        raise SpecError(
            f"the spec is too large or too deeply nested to read ({type(exc).__name__})",
            file=str(path),
            fix="write a plain spec (see examples/digits/assessment.yaml)",
        ) from None
    local = resolve_registered(spec, model_uri=model_uri, registry_uri=registry_uri)  # models:/ -> ONNX
    return local.resolve_paths(path.resolve().parent)


def _read_mapping(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    data = _parse_json(path, text) if path.suffix.lower() == ".json" else _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise SpecError(
            "the spec must be a mapping with keys id, title, model, data, goals",
            file=str(path),
            fix="see examples/digits/assessment.yaml",
        )
    return data


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise SpecError(
            f"spec file {path} does not exist" if not path.exists() else f"{path} is not a regular file",
            file=str(path),
            fix="pass the path of an assessment YAML or JSON file",
        )
    with path.open("rb") as handle:
        payload = handle.read(MAX_SPEC_BYTES + 1)
    if len(payload) > MAX_SPEC_BYTES:
        raise SpecError(
            f"the spec is larger than {human_bytes(MAX_SPEC_BYTES)}; nnassay refuses it unread",
            file=str(path),
            fix="keep the spec to goals and settings; put data in data.path and large parameters in files",
        )
    return payload.decode("utf-8", errors="replace")


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _syntax_error(path, "JSON", exc.msg, exc.lineno, exc.colno) from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise _syntax_error(path, "JSON", _reason(exc), None, None) from None


def _parse_yaml(path: Path, text: str) -> Any:
    loader = None
    try:
        loader = _BoundedLoader(text)  # checks every character first
        node = loader.get_single_node()
        _check_expansion(path, node)
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "cannot be parsed"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise _syntax_error(path, "YAML", problem, line, column) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else -1
        problem = f"character U+{code:04X} is not allowed in YAML"
        raise _syntax_error(path, "YAML", problem, line, column) from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise _syntax_error(path, "YAML", _reason(exc), None, None) from None
    finally:
        if loader is not None:
            loader.dispose()


def _syntax_error(path: Path, kind: str, problem: str, line: int | None, column: int | None) -> SpecError:
    where = f" at line {line}, column {column}" if line is not None else ""
    return SpecError(f"not valid {kind}{where}: {problem}", file=str(path), fix=_FIX_SYNTAX)


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, without any quoted input."""
    return str(exc).splitlines()[0].split(": '", 1)[0][:200] if str(exc) else type(exc).__name__


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts aliases as it composes and wraps value errors with a position."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name) in one spec", mark
                )
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {_reason(exc)}", node.start_mark
            ) from None


def _check_expansion(path: Path, root: Any) -> None:
    """Refuse aliases that expand beyond ``MAX_ALIAS_NODES`` extra nodes, recursive aliases and deep
    nesting, walking the composed graph once (each shared node is sized once)."""
    size: dict[int, int] = {}
    unique = 0
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)] if root is not None else []
    while stack:
        node, depth, done = stack.pop()
        children = _children(node)
        if done:
            size[id(node)] = min(1 + sum(size[id(c)] for c in children), 1 << 62)
            if size[id(node)] - unique > MAX_ALIAS_NODES:  # unique counts at least its own nodes
                _refuse(path, node, f"its aliases expand to more than {MAX_ALIAS_NODES} extra values")
            continue
        if id(node) in size:
            continue
        if depth > MAX_DEPTH:
            _refuse(path, node, f"nested deeper than {MAX_DEPTH} levels")
        size[id(node)] = -1  # in progress: meeting it again below itself means a recursive alias
        unique += 1
        stack.append((node, depth, True))
        for child in children:
            if size.get(id(child)) == -1:
                _refuse(path, child, "an alias refers to a mapping or list that contains it")
            stack.append((child, depth + 1, False))


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _refuse(path: Path, node: Any, problem: str) -> None:
    mark = node.start_mark
    raise SpecError(
        f"YAML refused at line {mark.line + 1}, column {mark.column + 1}: {problem}",
        file=str(path),
        fix="write the values out instead of nesting aliases (&anchor / *alias)",
    )


_FIX_FIELDS = "correct the field(s) named; `nnassay schema` writes the JSON Schema of the spec"


def spec_error(path: Path, exc: ValidationError, raw: dict[str, Any] | None = None) -> SpecError:
    """Turn pydantic's errors into one message naming the file, the first field at fault (once; any
    other fields after it, goals by their id) and the fix: a misspelt key gets its closest valid name
    ("rename 'threshhold' to 'threshold'"), and the required field it stands for is not listed again."""
    errors = _merged(exc.errors())
    fields = [_field(err["loc"], raw) for err in errors]
    lines = [_explain(errors[0])]
    lines += [
        f"{f}: {_explain(e)}" if f else _explain(e) for f, e in zip(fields[1:], errors[1:], strict=True)
    ]
    return SpecError("; ".join(lines), file=str(path), field=fields[0] or None, fix=_fix(errors))


def _merged(errors: list[Any]) -> list[Any]:
    """The errors with each misspelt key's guess (its closest valid name, a required sibling first),
    without the 'missing' error of the field the misspelt key was meant to be."""
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing" and e.get("loc")}
    merged, meant = [], set()
    for err in errors:
        if err["type"] == "extra_forbidden" and err.get("loc"):
            parent, key = tuple(err["loc"][:-1]), err["loc"][-1]
            siblings = [str(loc[-1]) for loc in missing if loc[:-1] == parent]
            guess = _did_you_mean(key, siblings) or _did_you_mean(key)
            if guess is not None:
                err = {**err, "guess": guess}
                meant.add((*parent, guess))
        merged.append(err)
    kept = [e for e in merged if not (e["type"] == "missing" and tuple(e.get("loc") or ()) in meant)]
    return kept or merged


def _fix(errors: list[Any]) -> str:
    """Renames for misspelt keys, removal for unknown ones, else the general fix."""
    fixes: list[str] = []
    for err in errors:
        if err["type"] != "extra_forbidden" or not err.get("loc"):
            return _FIX_FIELDS if not fixes else "; ".join([*fixes, _FIX_FIELDS])
        key = str(err["loc"][-1])[:64]
        fixes.append(f"rename {key!r} to {err['guess']!r}" if "guess" in err else f"remove {key!r}")
    return "; ".join(dict.fromkeys(fixes)) + " (unknown keys are rejected)"


def _field(loc: tuple[Any, ...], raw: dict[str, Any] | None) -> str:
    """'goals.0.criterion.confidence' -> "goals[G7].criterion.confidence" when goal 0 has id G7."""
    field = ".".join(str(p) for p in loc)
    goals = (raw or {}).get("goals")
    if len(loc) >= 2 and loc[0] == "goals" and isinstance(loc[1], int) and isinstance(goals, list):
        goal = goals[loc[1]] if loc[1] < len(goals) else None
        if isinstance(goal, dict) and isinstance(goal.get("id"), str):
            field = ".".join([f"goals[{goal['id'][:64]}]", *(str(p) for p in loc[2:])])
    return field


def _explain(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key; did you mean {err['guess']!r}?" if "guess" in err else "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and isinstance(err.get("input"), str):
        return f"{err['msg']}, got {err['input'][:64]!r}"
    return str(err["msg"])


@cache
def _known_keys() -> frozenset[str]:
    """Every field name of every spec record (the vocabulary a misspelt key is matched against)."""
    seen: set[type[Record]] = set()
    todo: list[type[Record]] = [Record]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        todo.extend(c for c in cls.__subclasses__() if c not in seen)
    return frozenset(name for cls in seen for name in getattr(cls, "model_fields", {}))


def _did_you_mean(key: object, candidates: list[str] | None = None) -> str | None:
    """The closest of ``candidates`` (default: every spec key) to a misspelt key ('sampels' ->
    'samples'), or None."""
    if not isinstance(key, str) or len(key) > 64:
        return None
    names = sorted(_known_keys()) if candidates is None else sorted(candidates)
    close = difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.75)
    return close[0] if close else None
