"""Hostile input: a spec, data file, model or tracking store built to hurt ends with exit code 2 and one
clear message (file, line and column where there is one, never the file's text), never a traceback;
sizes are checked from headers before anything large is allocated; the model digest covers the
weights stored as ONNX external data."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import TinyCase, goal, write_spec
from nnassay.schemas.goals import DataSpec, ModelSpec
from nnassay.tasks.errors import AssessmentError, DataError, ModelError, OutputError, SpecError
from nnassay.tasks.io import data_io, data_limits, spec_io
from nnassay.tasks.io.data_io import load_arrays, load_dataset
from nnassay.tasks.io.files import model_sha256, sha256_file
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.spec_io import read_spec
from nnassay.tasks.io.stores import check_tracking_store

BIDI = "\u202e"
SECRET = "SECRET-TOKEN-42"


# --- helpers -------------------------------------------------------------------------------------


def run_cli(
    spec: Path, out: Path, *extra: str, drop_env: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`nnassay assess SPEC --output OUT` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    command = [sys.executable, "-m", "nnassay.flows.cli.main", "assess", str(spec), "--output", str(out)]
    return subprocess.run(command + list(extra), capture_output=True, text=True, timeout=600, env=env)


def check_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one error line on stderr, no traceback; returns stderr."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err + proc.stdout
    assert len([line for line in err.splitlines() if line.startswith("nnassay: error:")]) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def spec_dict(case: Any, goals: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "tiny",
        "title": "Tiny assessment",
        "seed": 3,
        "model": {"path": str(case.model), "layout": case.layout, "value_range": [0.0, 1.0]},
        "data": {"path": str(case.data)},
        "goals": goals or [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)],
    }


def alias_bomb_spec(folder: Path, case: Any, levels: int = 9) -> Path:
    """A valid tiny spec whose goals[0].methods[0].params hold a 'billion laughs' alias bomb."""
    choice = {"name": "empirical.noise", "params": {"PLACEHOLDER": 1}}
    path = write_spec(folder, case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, methods=[choice])])
    text = path.read_text()
    indent = re.search(r"^( *)PLACEHOLDER: 1$", text, re.M)
    assert indent is not None
    pad = indent.group(1)
    lines = [f'{pad}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{pad}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    path.write_text(text.replace(indent.group(0), "\n".join(lines)))
    return path


def npy_bytes(header: dict[str, Any] | str, payload: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy member written by hand, so the header can claim anything."""
    text = header if isinstance(header, str) else repr(header)
    length_format = "<H" if version == (1, 0) else "<I"
    prefix = 6 + 2 + struct.calcsize(length_format)
    body = text + " " * ((-(prefix + len(text) + 1)) % 64) + "\n"
    return (
        b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(body)) + body.encode("utf-8") + payload
    )


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def small_y(n: int = 4) -> bytes:
    return npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (n,)}, b"\0" * 8 * n)


@pytest.fixture(scope="module")
def image_runner(image_case: Any) -> ModelRunner:
    return ModelRunner(ModelSpec(path=image_case.model, layout="NCHW"), prefer_cuda=False)


# --- through the CLI ------------------------------------------------------------------------------


def test_alias_bomb_fails_fast_with_line_and_column(tmp_path: Path, image_case: Any) -> None:
    spec = alias_bomb_spec(tmp_path / "spec", image_case)
    assert spec.stat().st_size < 4096
    started = time.perf_counter()
    with pytest.raises(SpecError, match=r"line \d+, column \d+.*alias") as caught:
        read_spec(spec)
    assert time.perf_counter() - started < 1.0
    assert "lol" not in str(caught.value)
    check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "alias", str(spec), "fix:")


def test_oversize_spec_is_refused_unread(tmp_path: Path, image_case: Any) -> None:
    spec = write_spec(tmp_path / "spec", image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    spec.write_text(spec.read_text() + "description: " + "x" * (1 << 20) + "\n")
    check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "larger than 1.0 MiB", str(spec))


def test_npz_header_claiming_200_gb_is_refused_before_loading(
    tmp_path: Path, image_case: Any, spec_writer
) -> None:
    x = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (50_000_000_000,)}, b"\0" * 64)
    data = write_npz(tmp_path / "huge.npz", {"x.npy": x, "y.npy": small_y()})
    assert data.stat().st_size < 2048
    spec = spec_writer(
        type(image_case)(image_case.model, data, "NCHW", "image", 3),
        [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)],
    )
    err = check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "huge.npz", "'x'", "186.3 GiB")
    assert "memory budget" in err or "the file holds" in err  # the budget is a share of free memory


def test_csv_error_names_line_and_column_not_the_content(
    tmp_path: Path, tabular_case: Any, spec_writer
) -> None:
    rows = ["f0,f1,f2,f3,f4,label"] + ["0.1,0.2,0.3,0.4,0.5,1"] * 3 + [f"0.1,{SECRET},0.3,0.4,0.5,1"]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    case = type(tabular_case)(tabular_case.model, tmp_path / "bad.csv", "NC", "tabular", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    err = check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "line 5, column 2", "bad.csv")
    assert SECRET not in err and "0.1" not in err


@pytest.mark.parametrize("where", ["run folder", "uri"])
def test_non_sqlite_mlflow_db_is_refused(tmp_path: Path, image_case: Any, spec_writer, where: str) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    out = tmp_path / "out"
    out.mkdir()
    if where == "run folder":
        store = out.parent / "mlflow.db"  # the default project store: beside the run folder
        store.write_text(f"just text, {SECRET}\n")
        proc = run_cli(spec, out, drop_env=("MLFLOW_TRACKING_URI", "NNASSAY_MLFLOW_TRACKING_URI"))
    else:
        store = tmp_path / "elsewhere.db"
        store.write_text(f"just text, {SECRET}\n")
        proc = run_cli(spec, out, "--mlflow-uri", f"sqlite:///{store}")
    err = check_refused(
        proc, "not an SQLite database", "mlflow.db" if where == "run folder" else "elsewhere.db"
    )
    assert SECRET not in err


def test_nul_in_spec_is_rejected_by_the_schema(tmp_path: Path, image_case: Any) -> None:
    data = spec_dict(image_case)
    data["goals"][0]["statement"] = "clean\x00accuracy"
    spec = tmp_path / "nul.json"
    spec.write_text(json.dumps(data))  # the NUL arrives as the JSON escape \u0000
    check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "goals.0.statement", "NUL", "nul.json")


def test_bidi_override_in_a_goal_id_is_shown_escaped(tmp_path: Path, image_case: Any, spec_writer) -> None:
    spec = spec_writer(image_case, [goal(f"G1{BIDI}1G", {"kind": "none"}, "accuracy", ">=", 0.5)])
    err = check_refused(run_cli(spec, tmp_path / "out", "--no-track"), "\\u202e", "id")
    assert BIDI not in err


HOSTILE_SPECS = {
    "wrong types": lambda d: {**d, "goals": {"G1": "no"}, "seed": "seven"},
    "huge numbers": lambda d: {**d, "model": {**d["model"], "value_range": [0, 10**400]}},
    "odd unicode keys": lambda d: {**d, f"ti\u200btle{BIDI}": "\U0001f600\x1b[31m", "title": None},
}


@pytest.mark.parametrize("mutation", sorted(HOSTILE_SPECS))
def test_mutated_specs_through_the_cli(tmp_path: Path, image_case: Any, mutation: str) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(HOSTILE_SPECS[mutation](spec_dict(image_case))))
    proc = run_cli(spec, tmp_path / "out", "--no-track")
    assert proc.returncode in (0, 1, 2)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert BIDI not in proc.stderr and "\x1b" not in proc.stderr


# --- the spec, in-process ------------------------------------------------------------------------


def test_yaml_errors_show_line_and_column_not_the_text(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"id: tiny\ntitle: {SECRET}\n  model: : [\n")
    with pytest.raises(SpecError, match=r"line 3, column \d+") as caught:
        read_spec(spec)
    assert SECRET not in str(caught.value)


def test_a_raw_nul_byte_names_line_and_column(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(b"id: tiny\ntitle: ab\x00c\n")
    with pytest.raises(SpecError, match=r"line 2, column 10.*U\+0000"):
        read_spec(spec)


def test_recursive_and_wide_aliases_are_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("id: &a [*a]\n")
    with pytest.raises(SpecError, match="contains it"):
        read_spec(spec)
    spec.write_text("a: &a x\nb: [" + ", ".join(["*a"] * (spec_io.MAX_ALIASES + 1)) + "]\n")
    with pytest.raises(SpecError, match=f"more than {spec_io.MAX_ALIASES} aliases"):
        read_spec(spec)


def test_a_few_aliases_still_work(tmp_path: Path, image_case: Any) -> None:
    """Anchors and aliases used as intended are not refused (no behaviour change for valid input)."""
    data = spec_dict(image_case, [goal(f"G{i}", {"kind": "none"}, "accuracy", ">=", 0.5) for i in (1, 2)])
    text = yaml.safe_dump(data, sort_keys=False)
    risk = "  risk:\n    id: R-1\n    source: B.5 risk sources related to machine learning\n"
    assert text.count(risk) == 2
    text = text.replace(risk, risk.replace("  risk:\n", "  risk: &risk\n"), 1)
    text = text[::-1].replace(risk[::-1], "  risk: *risk\n"[::-1], 1)[::-1]
    (tmp_path / "s.yaml").write_text(text)
    spec = read_spec(tmp_path / "s.yaml")
    assert spec.goals[0].risk == spec.goals[1].risk


def test_memory_error_while_loading_is_an_assessment_error(
    tmp_path: Path, image_case: Any, image_runner, monkeypatch
) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    spec = write_spec(tmp_path, image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    monkeypatch.setattr(spec_io, "_read_mapping", exhausted)
    with pytest.raises(SpecError, match="too large"):
        read_spec(spec)
    monkeypatch.setattr(data_io, "_load_dataset", exhausted)
    with pytest.raises(DataError, match="out of memory"):
        load_dataset(DataSpec(path=image_case.data), image_runner)


# --- data files, in-process -----------------------------------------------------------------------


def test_npz_over_the_memory_budget_names_the_array_and_the_numbers(tmp_path: Path, monkeypatch) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 1, 6, 6), np.float32), y=np.zeros(100, np.int64))
    monkeypatch.setattr(data_limits, "memory_budget", lambda: (10_000, "a test budget"))
    with pytest.raises(
        DataError, match=r"array 'x' claims shape \[100, 1, 6, 6\].*budget of 9.8 KiB \(a test budget\)"
    ):
        load_arrays(DataSpec(path=tmp_path / "d.npz"), tmp_path / "d.npz")


def test_truncated_npz_and_object_arrays_are_refused(tmp_path: Path) -> None:
    x = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (1000, 36)}, b"\0" * 16)
    write_npz(tmp_path / "t.npz", {"x.npy": x, "y.npy": small_y()})
    with pytest.raises(DataError, match="claims shape .* but the file holds 16 B"):
        load_arrays(DataSpec(path=tmp_path / "t.npz"), tmp_path / "t.npz")
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="Python objects"):
        load_arrays(DataSpec(path=tmp_path / "o.npz"), tmp_path / "o.npz")


def test_csv_over_the_budget_is_refused_before_parsing(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "d.csv").write_text("a,b,label\n" + "0.5,0.5,1\n" * 2000)
    monkeypatch.setattr(data_limits, "memory_budget", lambda: (10_000, "a test budget"))
    with pytest.raises(DataError, match=r"up to 2002 rows x 3 columns.*budget of 9.8 KiB"):
        load_arrays(DataSpec(path=tmp_path / "d.csv"), tmp_path / "d.csv")


def test_bad_images_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "imgs" / "c0"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6), np.uint8), mode="L").save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="b.png"):
        load_arrays(DataSpec(path=tmp_path / "imgs"), tmp_path / "imgs")
    Image.fromarray(np.zeros((7, 6), np.uint8), mode="L").save(folder / "b.png")
    with pytest.raises(DataError, match="b.png is \\[7, 6\\]"):
        load_arrays(DataSpec(path=tmp_path / "imgs"), tmp_path / "imgs")


# --- tracking store and model digest --------------------------------------------------------------


def test_tracking_store_check(tmp_path: Path) -> None:
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(OutputError, match="not an SQLite database"):
        check_tracking_store(f"sqlite:///{tmp_path / 'text.db'}")
    with pytest.raises(OutputError, match="not a regular file"):
        check_tracking_store(f"sqlite:///{tmp_path}")
    import sqlite3

    sqlite3.connect(tmp_path / "real.db").execute("create table t (a)").connection.commit()
    (tmp_path / "empty.db").touch()
    for uri in ("real.db", "empty.db", "missing.db"):
        check_tracking_store(f"sqlite:///{tmp_path / uri}")
    for uri in ("sqlite://", "sqlite:///:memory:", "http://localhost:5000", "file:///tmp/mlruns"):
        check_tracking_store(uri)


def test_model_digest_covers_external_data(tmp_path: Path, image_case: Any) -> None:
    assert model_sha256(image_case.model) == sha256_file(image_case.model)  # old evidence comparable
    proto = onnx.load(image_case.model)
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(
        proto, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    weights = folder / "model.onnx.data"
    before = model_sha256(folder / "model.onnx")
    assert before != sha256_file(folder / "model.onnx")
    payload = bytearray(weights.read_bytes())
    payload[len(payload) // 2] ^= 0x01
    weights.write_bytes(bytes(payload))
    assert model_sha256(folder / "model.onnx") != before
    weights.unlink()
    with pytest.raises(ModelError, match="missing"):
        model_sha256(folder / "model.onnx")


def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, image_case: Any) -> None:
    proto = onnx.load(image_case.model)
    onnx.save(proto, tmp_path / "model.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    (tmp_path / "sub").mkdir()
    graph = onnx.load(tmp_path / "model.onnx", load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.data"
    onnx.save(graph, tmp_path / "sub" / "model.onnx")
    with pytest.raises(ModelError, match="outside the model's folder"):
        model_sha256(tmp_path / "sub" / "model.onnx")


# --- property-based: mutated specs and data headers -------------------------------------------------

_WORK = Path(tempfile.mkdtemp(prefix="nnassay-hostile-"))
ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc", "Cf", "Co", "Mn"]),
    max_size=12,
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(ODD_TEXT, st.integers(), max_size=2),
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += _containers(child, (*path, key))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated_spec(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _containers(spec) if isinstance(_at(spec, p), dict | list) and _at(spec, p)]
        if not paths:
            break
        parent = _at(spec, draw(st.sampled_from(paths)))
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(LEAVES)
        elif isinstance(parent, dict):
            parent[draw(ODD_TEXT)] = draw(LEAVES)
        else:
            parent.insert(key, draw(LEAVES))
    return spec


def _write_mutated(spec: dict[str, Any], as_yaml: bool) -> Path:
    path = _WORK / ("spec.yaml" if as_yaml else "spec.json")
    text = yaml.safe_dump(spec, allow_unicode=True) if as_yaml else json.dumps(spec, ensure_ascii=False)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), as_yaml=st.booleans())
def test_mutated_specs_load_or_raise_an_assessment_error(
    data: st.DataObject, as_yaml: bool, image_case: Any
) -> None:
    spec = data.draw(mutated_spec(spec_dict(image_case)))
    path = _write_mutated(spec, as_yaml)
    try:
        read_spec(path)
    except AssessmentError as exc:
        assert BIDI not in str(exc) and "\x00" not in str(exc)


@settings(max_examples=100)
@given(text=st.binary(max_size=300), cut=st.integers(0, 2000))
def test_damaged_yaml_text_loads_or_raises_an_assessment_error(text: bytes, cut: int) -> None:
    base = (Path(__file__).resolve().parent.parent / "examples" / "digits" / "assessment.yaml").read_bytes()
    path = _WORK / "damaged.yaml"
    path.write_bytes(base[:cut] + text + base[cut:])
    with contextlib.suppress(AssessmentError):
        read_spec(path)


DESCRS = st.one_of(
    st.sampled_from(["<f4", ">f8", "|u1", "<i8", "|b1", "<f2"]),
    st.sampled_from(["|O", "<U4", "|S3", "<c8", "|V8", "<M8[s]"]),
    st.just([("a", "<f4"), ("b", "<i4")]),
    ODD_TEXT,
    st.integers(),
)
SHAPES = st.one_of(
    st.tuples(st.integers(-2, 50), st.just(1), st.just(6), st.just(6)),
    st.tuples(st.integers(0, 50), st.just(6), st.just(6), st.just(1)),
    st.lists(st.integers(-(2**40), 2**62), max_size=5).map(tuple),
    st.lists(st.integers(0, 4), max_size=3),
    st.just(()),
    ODD_TEXT,
)


def _payload(header: dict[str, Any], size: int | None, fill: bytes) -> bytes:
    """``size`` bytes, or (None) as many as the header claims when that is small."""
    if size is None:
        try:
            size = int(np.dtype(header["descr"]).itemsize * math.prod(header["shape"]))
        except Exception:  # noqa: BLE001 (a forged header: any size will do)
            size = 64
    return fill * max(0, min(size, 100_000))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    descr=DESCRS,
    shape=SHAPES,
    fortran=st.one_of(st.booleans(), st.booleans(), st.integers(0, 2)),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]),
    size=st.one_of(st.none(), st.integers(0, 8000)),
    fill=st.sampled_from([b"\0", b"\x3f", b"\xff"]),
    y_rows=st.one_of(st.none(), st.integers(-1, 60)),
    cut=st.one_of(st.none(), st.none(), st.integers(0, 4000)),
)
def test_mutated_npz_headers_load_or_raise_an_assessment_error(
    descr: Any, shape: Any, fortran: Any, version: tuple[int, int], size: int | None, fill: bytes,
    y_rows: int | None, cut: int | None, image_runner: ModelRunner,
) -> None:  # fmt: skip
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if y_rows is None:  # as many labels as x claims samples
        y_rows = shape[0] if isinstance(shape, tuple) and shape and isinstance(shape[0], int) else 0
    two_d = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (3, 2)})
    y = small_y(y_rows) if 0 <= y_rows < 10_000 else two_d
    x = npy_bytes(header, _payload(header, size, fill), version)
    path = write_npz(_WORK / "h.npz", {"x.npy": x, "y.npy": y})
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    try:
        data = load_dataset(DataSpec(path=path), image_runner)
        assert data.x.shape[1:] == (1, 6, 6) and len(data.x) == len(data.y)
    except AssessmentError as exc:
        assert "Traceback" not in str(exc)


@settings(max_examples=100)
@given(text=st.text(max_size=200), tail=st.binary(max_size=20))
def test_random_csv_loads_or_raises_an_assessment_error(text: str, tail: bytes) -> None:
    path = _WORK / "r.csv"
    path.write_bytes(("a,b,label\n" + text).encode("utf-8", "surrogatepass") + tail)
    try:
        x, y, names = load_arrays(DataSpec(path=path), path)
        assert len(x) == len(y) and math.prod(x.shape) >= 0 and len(names) == 2
    except AssessmentError:
        pass


def test_npy_writer_matches_numpy() -> None:
    """The hand-written .npy member is one numpy reads (so the hostile headers are realistic)."""
    member = npy_bytes(
        {"descr": "<i8", "fortran_order": False, "shape": (4,)}, np.arange(4, dtype="<i8").tobytes()
    )
    assert np.array_equal(np.load(io.BytesIO(member)), np.arange(4))


@pytest.mark.parametrize("entry", ["results", "tests"])
def test_a_run_folder_with_linked_entries_is_refused_and_nothing_is_written_outside(
    tmp_path: Path, image_case: TinyCase, entry: str
) -> None:
    """`results/` or `tests/` linked to an outside folder would make the run write outside --output."""
    import subprocess
    import sys

    spec = write_spec(tmp_path / "spec", image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    outside, run = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    run.mkdir()
    (run / entry).symlink_to(outside, target_is_directory=True)
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(spec), "--output", str(run), "--no-track"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert not any(outside.iterdir())
