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


def test_misspelt_key_names_the_file_the_field_once_the_closest_key_and_the_fix(
    tmp_path, image_case, spec_writer
) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    spec.write_text(spec.read_text().replace("threshold:", "threshhold:"))
    code, text = assess(spec, tmp_path / "out")
    check_clean_error(
        code,
        text,
        f"{spec}: field 'goals[G1].criterion.threshhold': unknown key; did you mean 'threshold'?",
        "fix: rename 'threshhold' to 'threshold'",
    )
    assert text.count("threshhold") == 2 and "required field is missing" not in text  # path + fix only


def test_misspelt_top_level_key_gets_the_rename(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)], titel="t")
    code, text = assess(spec, tmp_path / "out")
    check_clean_error(
        code, text, "field 'titel': unknown key; did you mean 'title'?", "rename 'titel' to 'title'"
    )
    assert text.count("titel") == 2


# Commands that take no --debug: no user files (schema, methods), VNN-COMP's own option parser
# (verify), and checks that report unreadable input as their result, with no exception to show
DEBUG_EXEMPT = {"schema", "methods", "verify", "evidence verify", "evidence keygen", "monitor-verify"}


def _commands(group, prefix: str = ""):  # type: ignore[no-untyped-def]
    """(name, click command) of every command, sub-commands as 'evidence verify'."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer's own click)
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_reading_user_input_takes_the_shared_debug_option() -> None:
    from nnassay.flows.cli.options import Debug

    shared_help = Debug.__metadata__[0].help
    seen = {}
    import typer.main

    for name, command in _commands(typer.main.get_command(app)):
        seen[name] = [p for p in command.params if "--debug" in getattr(p, "opts", [])]
    missing = sorted(n for n, found in seen.items() if not found and n not in DEBUG_EXEMPT)
    assert missing == [], f"commands without --debug: {missing}"
    assert {"assess", "lifecycle", "schedule", "plan", "monitor", "monitor-schedule", "report"} <= {
        n for n, found in seen.items() if found
    }
    assert all(p[0].help == shared_help for p in seen.values() if p)  # one shared option, not copies


def _debug_run(args: list[str]) -> tuple[int, str]:
    done = CliRunner().invoke(app, args)
    return done.exit_code, done.output


def test_debug_keeps_exit_2_and_shows_the_traceback_in_every_command(
    tmp_path, image_case, spec_writer
) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5, budgett={})])
    field = tmp_path / "field.npz"
    field.write_bytes(image_case.data.read_bytes())
    runs = {
        "plan": ["plan", str(spec)],
        "schedule": ["schedule", str(spec), "--cron", "0 3 * * 1", "--dry-run", "-o", str(tmp_path / "s")],
        "monitor-schedule": ["monitor-schedule", str(spec), "--field", str(field), "--interval", "60"]
        + ["--dry-run", "-o", str(tmp_path / "m")],
        "monitor": ["monitor", str(spec), "--field", str(field), "--no-track", "-o", str(tmp_path / "m")],
        "report": ["report", str(tmp_path / "missing-evidence.json"), "-o", str(tmp_path / "d.pdf")],
    }
    for name, args in runs.items():
        check_clean_error(*_debug_run(args))  # without --debug: one line, no traceback
        code, text = _debug_run([*args, "--debug"])
        assert code == 2, (name, text)
        assert "Traceback" in text and text.count("nnassay: error:") == 1, (name, text)
        assert ("not a readable evidence bundle" if name == "report" else "did you mean 'budget'?") in text


def test_schedule_debug_shows_the_traceback_of_a_bad_cron(tmp_path, image_case, spec_writer) -> None:
    spec = spec_writer(image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    code, text = _debug_run(["schedule", str(spec), "--cron", "61 * * * *", "--dry-run", "--debug"])
    assert code == 2 and "Traceback" in text and "the minute (field 1 of 5) is '61'" in text, text
