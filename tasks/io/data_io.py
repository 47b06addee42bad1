"""Data I/O: load the test data the user names and check that it fits the model.

Arrays are returned in the model's layout and in data space (inside ``model.value_range``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnassay.schemas.goals import DataSpec, FeatureSpec, Layout
from nnassay.tasks.errors import DataError, ModelError
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.io.model_io import ModelRunner

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Test samples in the model's layout: x float32 in data space, y int64 class indices."""

    x: np.ndarray
    y: np.ndarray
    layout: Layout
    kind: str  # 'image' or 'tabular'
    path: Path
    sha256: str
    feature_names: tuple[str, ...] = ()
    features: tuple[FeatureSpec, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int) -> Dataset:
        """The first ``n`` samples (all when n is larger)."""
        return replace(self, x=self.x[:n], y=self.y[:n])


def load_arrays(spec: DataSpec, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read x, y (and feature names for CSV) from an npz, CSV or image folder."""
    if not path.exists():
        raise DataError(
            f"data file {path} does not exist",
            file=str(path),
            field="data.path",
            fix="point data.path at an existing file (relative to the spec)",
        )
    fmt = spec.format
    if fmt == "auto":
        fmt = "image_folder" if path.is_dir() else {".npz": "npz", ".csv": "csv"}.get(path.suffix.lower(), "")
    if fmt == "npz":
        return (*_load_npz(path), ())
    if fmt == "csv":
        return _load_csv(path, spec.label_column)
    if fmt == "image_folder":
        return (*_load_image_folder(path), ())
    raise DataError(
        f"cannot tell the format of {path.name}",
        file=str(path),
        field="data.format",
        fix="use .npz (arrays x and y), .csv, or a folder of class sub-folders of images, or set data.format",
    )


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "x" not in keys or "y" not in keys:
                raise DataError(
                    f"the npz holds arrays {keys}, expected 'x' and 'y'",
                    file=str(path),
                    field="data.path",
                    fix="save the file with np.savez(path, x=..., y=...)",
                )
            return archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the npz file: {exc}",
            file=str(path),
            field="data.path",
            fix="write it with numpy.savez and no object arrays",
        ) from exc


def _load_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DataError(
            "the CSV has no data rows",
            file=str(path),
            field="data.path",
            fix="write a header row and one row per sample",
        )
    header, body = rows[0], rows[1:]
    if label_column not in header:
        raise DataError(
            f"no column {label_column!r}; columns are {header}",
            file=str(path),
            field="data.label_column",
            fix="set data.label_column to the label column",
        )
    try:
        values = np.array([[float(v) if v != "" else np.nan for v in row] for row in body])
    except ValueError as exc:
        raise DataError(
            f"a value is not numeric: {exc}",
            file=str(path),
            field="data.path",
            fix="encode categorical features as numbers",
        ) from exc
    label = header.index(label_column)
    names = tuple(h for i, h in enumerate(header) if i != label)
    return np.delete(values, label, axis=1), values[:, label], names


def _load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    images, labels = [], []
    for index, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(file) as img:
                    images.append(np.asarray(img.convert("RGB" if img.mode not in ("L", "I") else "L")))
                labels.append(index)
    if not images:
        raise DataError(
            "no images found in class sub-folders",
            file=str(path),
            field="data.path",
            fix="lay out images as <folder>/<class index or name>/<image>",
        )
    stack = np.stack(images).astype(np.float32) / 255.0
    return (stack[..., None] if stack.ndim == 3 else stack), np.array(labels)  # NHWC


def load_dataset(spec: DataSpec, model: ModelRunner) -> Dataset:
    """Load the data, convert it to the model's layout and check shape, values and labels."""
    path = Path(spec.path)
    x, y, names = load_arrays(spec, path)
    if spec.format == "image_folder" or path.is_dir():
        low, high = model.value_range
        x = x * (high - low) + low
    x, y = np.asarray(x), np.asarray(y)
    if spec.limit:
        x, y = x[: spec.limit], y[: spec.limit]
    _check_values(x, y, path, model)
    data_layout = spec.layout or (Layout.NHWC if path.is_dir() else model.layout)
    x = _to_model_layout(x.astype(np.float32), data_layout, model, path)
    kind = "tabular" if model.layout == Layout.FLAT and data_layout == Layout.FLAT else "image"
    feature_names = names or tuple(str(i) for i in range(x.shape[1])) if x.ndim == 2 else names
    return Dataset(
        x=x,
        y=y.astype(np.int64),
        layout=model.layout,
        kind=kind,
        path=path,
        sha256=sha256_file(path),
        feature_names=tuple(feature_names),
        features=tuple(spec.features or ()),
    )


def _check_values(x: np.ndarray, y: np.ndarray, path: Path, model: ModelRunner) -> None:
    if len(x) != len(y) or len(x) == 0:
        raise DataError(
            f"x has {len(x)} samples and y has {len(y)}",
            file=str(path),
            field="data.path",
            fix="store one label per sample and at least one sample",
        )
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(
            f"x has dtype {x.dtype}, expected numbers",
            file=str(path),
            field="data.path",
            fix="store x as a float or integer array",
        )
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{int(bad.sum())} samples contain NaN or infinite values (first: index {int(np.argmax(bad))})",
            file=str(path),
            field="data.path",
            fix="remove or impute those samples; invalid input is tested by an"
            " 'invalid_input' goal, not by the test data",
        )
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise DataError(
            "labels must be whole class indices",
            file=str(path),
            field="data.path",
            fix="store y as integer class indices",
        )
    n_classes = model.n_classes
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(
            f"labels span [{int(y.min())}, {int(y.max())}] but the model has "
            f"{n_classes} outputs (classes 0..{n_classes - 1})",
            file=str(path),
            field="data.path",
            fix="map labels to class indices 0..classes-1",
        )
    low, high = model.value_range
    if x.min() < low - 1e-6 or x.max() > high + 1e-6:
        raise DataError(
            f"data values span [{x.min():.4g}, {x.max():.4g}] outside model.value_range [{low:g}, {high:g}]",
            file=str(path),
            field="model.value_range",
            fix="set model.value_range to the data's range, or rescale the data",
        )


def _to_model_layout(x: np.ndarray, data_layout: Layout, model: ModelRunner, path: Path) -> np.ndarray:
    if x.ndim == 4 and data_layout != model.layout and model.layout != Layout.FLAT:
        x = np.transpose(x, (0, 3, 1, 2) if model.layout == Layout.NCHW else (0, 2, 3, 1))
    if x.ndim == 3 and model.layout == Layout.NCHW:
        x = x[:, None]
    if x.ndim == 3 and model.layout == Layout.NHWC:
        x = x[..., None]
    expected = model.sample_shape()
    if expected is not None and tuple(x.shape[1:]) != expected:
        if int(np.prod(x.shape[1:])) == int(np.prod(expected)) and model.layout == Layout.FLAT:
            return np.ascontiguousarray(x.reshape(len(x), *expected))
        raise ModelError(
            f"the model expects samples of shape {list(expected)} but the data has "
            f"{list(x.shape[1:])} (layout {model.layout.value})",
            file=str(path),
            field="model.layout",
            fix="set model.layout / data.layout to the arrays' axis order, or reshape the data",
        )
    return np.ascontiguousarray(x)
