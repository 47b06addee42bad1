"""Loading field data: files and folders of batches, with and without labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monitor_kit import DIGITS
from PIL import Image

from nnassay.schemas.goals import DataSpec
from nnassay.schemas.monitoring import DriftVerdict
from nnassay.tasks.errors import DataError
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring.field_io import UNLABELLED
from nnassay.tasks.monitoring.monitor import MonitorOptions, load_field, monitor

SPEC = DataSpec(path=DIGITS / "test.npz")


def test_the_example_field_folder(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    batches = load_field(DIGITS / "field", SPEC, digits_model)
    assert [b.name for b in batches] == ["batch-01-same.npz", "batch-02-shifted.npz"]
    assert all(b.labelled and b.modified > 0 for b in batches)
    options = MonitorOptions(permutations=200)
    same, shifted = (monitor(digits_reference, b.data, digits_model, options=options) for b in batches)
    assert same.verdict == DriftVerdict.NO_DRIFT and same.overlap_removed >= 170
    assert shifted.verdict == DriftVerdict.DRIFT and "image brightness (mean pixel value)" in shifted.drifted
    assert same.field_name == "batch-01-same.npz" and same.field_sha256 != shifted.field_sha256


def test_example_field_data_stay_small() -> None:
    assert sum(p.stat().st_size for p in (DIGITS / "field").iterdir()) < 500_000


def test_unlabelled_npz_csv_and_images(
    tmp_path: Path,
    tabular_case,
    tabular_model: ModelRunner,
    image_case,  # type: ignore[no-untyped-def]
    image_model: ModelRunner,
) -> None:
    x = np.random.default_rng(0).uniform(0, 1, (12, 5)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x)
    header = ",".join(f"f{i}" for i in range(5))
    (tmp_path / "b.csv").write_text(
        header + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n"
    )
    batches = load_field(tmp_path, DataSpec(path=tabular_case.data), tabular_model)
    assert [b.name for b in batches] == ["a.npz", "b.csv"]
    for batch in batches:
        assert not batch.labelled and np.all(batch.data.y == UNLABELLED)
        np.testing.assert_allclose(batch.data.x, x, atol=1e-6)
        assert batch.data.path.parent == tmp_path
    assert batches[1].data.feature_names == tuple(f"f{i}" for i in range(5))
    loose = tmp_path / "images"
    loose.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(loose / f"{i}.png")
    (image_batch,) = load_field(loose, DataSpec(path=image_case.data), image_model)
    assert not image_batch.labelled and image_batch.data.x.shape == (3, 1, 6, 6)


def test_labelled_csv_and_image_folder(
    tmp_path: Path,
    tabular_case,
    tabular_model: ModelRunner,
    image_case,  # type: ignore[no-untyped-def]
    image_model: ModelRunner,
) -> None:
    (tmp_path / "t.csv").write_text("f0,f1,f2,f3,f4,label\n0.1,0.2,0.3,0.4,0.5,2\n0.5,0.4,0.3,0.2,0.1,1\n")
    (batch,) = load_field(tmp_path / "t.csv", DataSpec(path=tabular_case.data), tabular_model)
    assert batch.labelled and batch.data.y.tolist() == [2, 1]
    folder = tmp_path / "imgs"
    for label in ("0", "1"):
        (folder / label).mkdir(parents=True)
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(folder / label / "x.png")
    (batch,) = load_field(folder, DataSpec(path=image_case.data), image_model)
    assert batch.labelled and batch.data.y.tolist() == [0, 1]


def test_missing_or_empty_field_path_is_a_data_error(tmp_path: Path, digits_model: ModelRunner) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_field(tmp_path / "nothing", SPEC, digits_model)
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(DataError, match="no field batch"):
        load_field(tmp_path, SPEC, digits_model)
