"""Model and data I/O: formats, layouts, preprocessing, fixed batch sizes, provider choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import build_mlp
from nnassay.schemas.goals import DataSpec, Layout, ModelSpec, Preprocessing
from nnassay.tasks.errors import DataError
from nnassay.tasks.io.data_io import load_dataset
from nnassay.tasks.io.model_io import ModelRunner


def runner(path: Path, layout: str = "NCHW", **kw) -> ModelRunner:  # type: ignore[no-untyped-def]
    return ModelRunner(ModelSpec(path=path, layout=layout, **kw), prefer_cuda=False)


def test_cpu_provider_is_recorded(image_case) -> None:
    model = runner(image_case.model)
    assert model.provider == "CPUExecutionProvider"
    assert model.n_classes == 3 and model.sample_shape() == (1, 6, 6)


def test_nhwc_data_is_transposed_for_an_nchw_model(tmp_path: Path, image_case) -> None:
    with np.load(image_case.data) as d:
        x, y = d["x"], d["y"]
    np.savez(tmp_path / "nhwc.npz", x=np.transpose(x, (0, 2, 3, 1)), y=y)
    model = runner(image_case.model)
    data = load_dataset(DataSpec(path=tmp_path / "nhwc.npz", layout=Layout.NHWC), model)
    assert np.array_equal(data.x, x) and data.kind == "image"


def test_preprocessing_is_applied_before_the_model(tmp_path: Path, image_case) -> None:
    plain = runner(image_case.model)
    scaled = runner(
        image_case.model,
        value_range=(0.0, 255.0),
        preprocessing=Preprocessing(scale=1 / 255.0, mean=[0.0], std=[1.0]),
    )
    with np.load(image_case.data) as d:
        x = d["x"][:10]
    assert np.allclose(plain.logits(x), scaled.logits(x * 255.0), atol=1e-5)
    normalised = runner(image_case.model, preprocessing=Preprocessing(mean=[0.5], std=[0.25]))
    assert np.allclose(normalised.logits(x), plain.logits((x - 0.5) / 0.25), atol=1e-5)


def test_fixed_batch_model_runs_any_number_of_samples(tmp_path: Path, image_case) -> None:
    proto = onnx.load(image_case.model)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(proto, tmp_path / "b4.onnx")
    fixed, free = runner(tmp_path / "b4.onnx"), runner(image_case.model)
    with np.load(image_case.data) as d:
        x = d["x"][:11]
    assert fixed.fixed_batch == 4
    assert np.allclose(fixed.logits(x), free.logits(x), atol=1e-6)


def test_csv_data_with_label_column(tmp_path: Path, tabular_case) -> None:
    with np.load(tabular_case.data) as d:
        x, y = d["x"], d["y"]
    rows = ["f0,f1,label,f2,f3,f4"] + [
        ",".join([*map(str, r[:2]), str(int(t)), *map(str, r[2:])]) for r, t in zip(x, y, strict=True)
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    data = load_dataset(DataSpec(path=tmp_path / "t.csv"), runner(tabular_case.model, layout="NC"))
    assert np.allclose(data.x, x, atol=1e-6) and np.array_equal(data.y, y)
    assert data.kind == "tabular" and data.feature_names == ("f0", "f1", "f2", "f3", "f4")


def test_csv_without_label_column_names_it(tmp_path: Path, tabular_case) -> None:
    (tmp_path / "t.csv").write_text("a,b,c,d,e\n1,2,3,4,5\n")
    with pytest.raises(DataError, match="data.label_column"):
        load_dataset(DataSpec(path=tmp_path / "t.csv"), runner(tabular_case.model, layout="NC"))


def test_image_folder(tmp_path: Path, image_case) -> None:
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = tmp_path / "imgs" / f"class{label}"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8), mode="L").save(folder / f"{k}.png")
    data = load_dataset(DataSpec(path=tmp_path / "imgs"), runner(image_case.model))
    assert data.x.shape == (6, 1, 6, 6) and list(data.y) == [0, 0, 1, 1, 2, 2]
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0


def test_values_outside_the_range_are_rejected(tmp_path: Path, image_case) -> None:
    with np.load(image_case.data) as d:
        np.savez(tmp_path / "big.npz", x=d["x"] * 255, y=d["y"])
    with pytest.raises(DataError, match="model.value_range"):
        load_dataset(DataSpec(path=tmp_path / "big.npz"), runner(image_case.model))


def test_npz_without_expected_arrays(tmp_path: Path, image_case) -> None:
    np.savez(tmp_path / "odd.npz", images=np.zeros((2, 1, 6, 6)))
    with pytest.raises(DataError, match="expected 'x' and 'y'"):
        load_dataset(DataSpec(path=tmp_path / "odd.npz"), runner(image_case.model))


def test_flattened_model_accepts_image_data(tmp_path: Path, image_case) -> None:
    flat = build_mlp(tmp_path / "flat.onnx", [36, 8, 3])
    data = load_dataset(DataSpec(path=image_case.data, layout=Layout.NCHW), runner(flat, layout="NC"))
    assert data.x.shape == (120, 36)


def test_a_declared_layout_the_input_plainly_contradicts_is_refused(tmp_path: Path) -> None:
    """[N, 1, 16, 16] declared NHWC (16 'channels') and [N, 16, 16, 3] declared NCHW are refused naming
    the field and the layout to set; shapes that fit their declaration, or that could be either, pass."""
    from nnassay.tasks.errors import ModelError
    from nnassay.tasks.io.model_io import check_layout

    for shape, declared, fix in (
        ([None, 1, 16, 16], Layout.NHWC, "NCHW"),
        (["N", 16, 16, 3], Layout.NCHW, "NHWC"),
    ):
        with pytest.raises(ModelError, match="model.layout is") as info:
            check_layout(declared, shape, tmp_path / "m.onnx")
        assert info.value.field == "model.layout" and f"set model.layout: {fix}" in (info.value.fix or "")
    for shape, declared in (
        ([None, 1, 16, 16], Layout.NCHW),
        ([None, 16, 16, 3], Layout.NHWC),
        ([None, 13, 64, 64], Layout.NCHW),  # multispectral: 13 channels first
        ([None, 16, 8, 4], Layout.NCHW),  # 16 channels of 8 x 4: could be either, not judged
        ([None, 3, "H", "W"], Layout.NHWC),  # symbolic axes: not judged
        ([None, 20], Layout.FLAT),
    ):
        check_layout(declared, shape, tmp_path / "m.onnx")


def test_model_labels_must_name_every_score_column(tmp_path: Path, image_case) -> None:  # type: ignore[no-untyped-def]
    """Three class names for a model with another number of scores names model.labels, not the data."""
    from nnassay.tasks.errors import ModelError

    model = ModelRunner(ModelSpec(path=str(image_case.model), labels=["a", "b", "c", "d"]), prefer_cuda=False)
    assert model.n_classes == 3
    with pytest.raises(ModelError, match="model.labels names 4 classes") as info:
        load_dataset(DataSpec(path=image_case.data), model)
    assert info.value.field == "model.labels" and "exactly 3 class names" in (info.value.fix or "")
