"""Bad input ends with exit code 2 and one clear message naming file, field and fix; nothing is lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from conftest import build_mlp, goal
from nnassay.flows.cli.app import app

RUNNER = CliRunner()


def assess(spec: Path, out: Path) -> tuple[int, str]:
    result = RUNNER.invoke(app, ["assess", str(spec), "--output", str(out), "--no-track"])
    return result.exit_code, result.output


def check_clean_error(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text
    assert text.count("nnassay: error:") == 1
    for needle in needles:
        assert needle in text, text


def test_unknown_key(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, colour="red")])
    check_clean_error(*assess(spec, tmp_path / "out"), "goals[G1].colour", "unknown key", "fix:", str(spec))


def test_missing_model_file(tmp_path, image_case, spec_writer) -> None:
    case = type(image_case)(tmp_path / "nope.onnx", image_case.data, "NCHW", "image", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "does not exist", "model.path", "nope.onnx")


def test_file_that_is_not_onnx(tmp_path, image_case, spec_writer) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not a protobuf at all" * 10)
    case = type(image_case)(bogus, image_case.data, "NCHW", "image", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "cannot load the model", "bogus.onnx", "fix:")


def test_input_shape_mismatch(tmp_path, image_case, spec_writer) -> None:
    other = build_mlp(tmp_path / "m49.onnx", [49, 4, 3], image_shape=(1, 7, 7))
    case = type(image_case)(other, image_case.data, "NCHW", "image", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "[1, 7, 7]", "[1, 6, 6]", "model.layout")


def test_nan_in_data(tmp_path, image_case, spec_writer) -> None:
    with np.load(image_case.data) as d:
        x, y = d["x"].copy(), d["y"]
    x[3, 0, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    case = type(image_case)(image_case.model, tmp_path / "nan.npz", "NCHW", "image", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "NaN", "index 3", "nan.npz")


def test_labels_out_of_range(tmp_path, image_case, spec_writer) -> None:
    with np.load(image_case.data) as d:
        x, y = d["x"], d["y"].copy()
    y[0] = 7
    np.savez(tmp_path / "lab.npz", x=x, y=y)
    case = type(image_case)(image_case.model, tmp_path / "lab.npz", "NCHW", "image", 3)
    spec = spec_writer(case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "labels span [0, 7]", "3 outputs")


def test_unwritable_output_folder(tmp_path, image_case, spec_writer) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a folder")
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_clean_error(*assess(spec, blocker / "out"), "not writable", "--output", "a-file")


def test_bad_input_does_not_touch_an_existing_run(tmp_path, image_case, spec_writer) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "evidence.json").write_text('{"kept": true}')
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, typo=1)])
    check_clean_error(*assess(spec, out))
    assert (out / "evidence.json").read_text() == '{"kept": true}'
    assert sorted(p.name for p in out.iterdir()) == ["evidence.json"]


def test_planning_problem_names_the_goal(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(image_case, [goal("G9", {"kind": "none"}, "happiness", ">=", 0.5)])
    check_clean_error(*assess(spec, tmp_path / "out"), "goal G9", "happiness")


def test_misspelt_key_gets_the_closest_name(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(
        image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, budgte={"samples": 5})]
    )
    check_clean_error(*assess(spec, tmp_path / "out"), "goals[G1].budgte", "did you mean 'budget'?")


def test_misspelt_method_parameter_gets_the_closest_name(tmp_path, image_case, spec_writer) -> None:
    methods = [{"name": "empirical.pgd_linf", "params": {"step": 10}}]
    spec = spec_writer(
        image_case,
        [goal("G2", {"kind": "linf_ball", "eps": 0.1}, "robust_accuracy", ">=", 0.5, methods=methods)],
    )
    code, text = assess(spec, tmp_path / "out")
    check_clean_error(code, text, "goal G2", "'step'", "unknown parameter (did you mean 'steps'?)")


def test_debug_shows_the_traceback_and_keeps_exit_2(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, budgett={})])
    done = CliRunner().invoke(app, ["assess", str(spec), "--output", str(tmp_path / "out"), "--debug"])
    assert done.exit_code == 2, done.output
    assert "Traceback" in done.output and "did you mean 'budget'?" in done.output


def test_misspelt_metric_gets_the_closest_name(tmp_path, image_case, spec_writer) -> None:
    attack = goal("G3", {"kind": "linf_ball", "eps": 0.1}, "robust_acuracy", ">=", 0.5)
    check_clean_error(
        *assess(spec_writer(image_case, [attack]), tmp_path / "out"), "did you mean 'robust_accuracy'?"
    )
