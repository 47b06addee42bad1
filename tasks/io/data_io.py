"""Data I/O: load the test data the user names and check that it fits the model.

Arrays are returned in the model's layout and in data space (inside ``model.value_range``).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnassay.schemas.goals import DataSpec, FeatureSpec, Layout
from nnassay.tasks.errors import DataError, ModelError
from nnassay.tasks.io import data_limits
from nnassay.tasks.io.feature_checks import check_features
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.io.labels import class_indices
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
    repeats: np.ndarray | None = None  # per sample: x exactly repeats an earlier x; None: not checked
    source_x: np.ndarray | None = None  # a subset's: x of the whole data it came from; None: x is whole
    labels_read: str = ""  # how y became class indices when it held labels ("": it held indices)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def duplicates(self) -> int:
        """How many samples exactly repeat an earlier sample's input (0 when not checked).

        Confidence intervals assume independent samples: repeated inputs make them too narrow.
        """
        return int(self.repeats.sum()) if self.repeats is not None else 0

    @property
    def whole_x(self) -> np.ndarray:
        """x of the whole data file (after ``data.limit``), also for a subset: the per-feature
        statistics (scale, observed range) come from it, so every goal shares one feature box."""
        return self.source_x if self.source_x is not None else self.x

    def subset(self, n: int) -> Dataset:
        """The first ``n`` samples (all when n is larger); ``whole_x`` stays the whole data's."""
        return self.rows(slice(0, n))

    def rows(self, index: slice | np.ndarray) -> Dataset:
        """The samples at ``index`` (a slice or an array of row numbers); ``whole_x`` stays the whole data's."""
        repeats = self.repeats[index] if self.repeats is not None else None
        return replace(self, x=self.x[index], y=self.y[index], repeats=repeats, source_x=self.whole_x)


def _check_declared_labels(model: ModelRunner) -> None:
    """``model.labels`` must name exactly the classes the model scores (one name per score column)."""
    names = model.spec.labels
    if names and len(names) != model.n_classes:
        raise ModelError(
            f"model.labels names {len(names)} classes {list(names)[:10]} but the model gives "
            f"{model.n_classes} scores per sample (output {model.output_name!r})",
            file=str(model.path),
            field="model.labels",
            fix=f"list exactly {model.n_classes} class names, in the order of the model's score columns",
        )


def repeated_inputs(x: np.ndarray) -> np.ndarray:
    """Per row of ``x``: True when its bytes equal an earlier row's (hashed, so memory stays small)."""
    rows = np.ascontiguousarray(x).reshape(len(x), -1)
    seen: set[bytes] = set()
    repeats = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        repeats[i] = key in seen
        seen.add(key)
    return repeats


def load_arrays(spec: DataSpec, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read x, y (and feature names for CSV) from an npz, CSV or image folder."""
    if not path.exists():
        raise DataError(
            f"data file {path} does not exist",
            file=str(path),
            field="data.path",
            fix="point data.path at an existing file (relative to the spec)",
        )
    fmt: str = spec.format
    if fmt == "auto":
        fmt = "image_folder" if path.is_dir() else {".npz": "npz", ".csv": "csv"}.get(path.suffix.lower(), "")
    if fmt in ("npz", "csv") and not path.is_file() or fmt == "image_folder" and not path.is_dir():
        raise DataError(
            f"data.format is {fmt!r} but {path.name} is {'not a regular file' if fmt != 'image_folder' else 'not a folder'}",
            file=str(path),
            field="data.format",
            fix="point data.path at the data file (or folder of images), or correct data.format",
        )
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
    data_limits.check_npz(path, ("x", "y"))  # headers against the memory budget, before loading
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["x"], archive["y"]
    except data_limits.NPZ_ERRORS as exc:
        raise DataError(
            f"cannot read the npz file: {data_limits.reason(exc)}",
            file=str(path),
            field="data.path",
            fix="write it with numpy.savez and no object arrays",
        ) from None


def _load_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Parse a CSV row by row into a float array sized from its line count (checked first); the
    label column may hold numbers or text (the model's class labels, as scikit-learn saves them)."""
    lines, longest = data_limits.check_csv(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, [])
            data_limits.check_csv_budget(path, lines, len(header), longest)
            if label_column not in header:
                raise DataError(
                    f"no column {label_column!r} in the header (line 1, {len(header)} columns)",
                    file=str(path),
                    field="data.label_column",
                    fix="set data.label_column to the label column",
                )
            label = header.index(label_column)
            values = np.empty((max(lines - 1, 0), len(header) - 1))
            labels: list[str] = []
            for row in reader:
                labels.append(_csv_label(row, header, reader.line_num, path, label))
                values[len(labels) - 1] = _csv_row(row, header, reader.line_num, path, label)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _csv_error(path, _csv_reason(exc, path, reader.line_num)) from None
    if not labels:
        raise DataError(
            "the CSV has no data rows",
            file=str(path),
            field="data.path",
            fix="write a header row and one row per sample",
        )
    names = tuple(h for i, h in enumerate(header) if i != label)
    y = np.array([float(v) for v in labels]) if all(map(_is_number, labels)) else np.array(labels)
    return values[: len(labels)], y, names


def _csv_label(row: list[str], header: list[str], line: int, path: Path, label: int) -> str:
    if len(row) != len(header):
        raise _csv_error(
            path, f"line {line} has {len(row)} values; the header (line 1) has {len(header)} columns"
        )
    return row[label].strip()


def _csv_row(row: list[str], header: list[str], line: int, path: Path, label: int) -> list[float]:
    """The feature values of one row (every column but the label), as numbers."""
    try:
        return [float(v) if v != "" else np.nan for i, v in enumerate(row) if i != label]
    except ValueError:
        column = next(i for i, v in enumerate(row) if i != label and not _is_number(v))
        raise _csv_error(
            path, f"line {line}, column {column + 1} ({header[column]!r}) is not a number"
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text or "nan")
    except ValueError:
        return False
    return True


def _csv_reason(exc: Exception, path: Path, line: int) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"line {data_limits.first_bad_utf8_line(path) or '?'} is not UTF-8 text"
    return f"line {line + 1} cannot be read: {str(exc).split(': ', 1)[0][:160]}"


def _csv_error(path: Path, message: str) -> DataError:
    return DataError(
        message,
        file=str(path),
        field="data.path",
        fix="encode categorical features as numbers (declare them in data.features, kind: categorical)"
        if "not a number" in message
        else "write one comma-separated row per sample",
    )


def _load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    images: list[np.ndarray] = []
    labels: list[int] = []
    pixels = 0
    for index, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                image = _read_image(file, path, pixels)
                if images and image.shape != images[0].shape:
                    raise DataError(
                        f"{file.relative_to(path)} is {list(image.shape)} (height, width[, channels]) but"
                        f" the first image is {list(images[0].shape)}",
                        file=str(path),
                        field="data.path",
                        fix="give every image the same size and colour mode",
                    )
                images.append(image)
                pixels += image.size
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


def _read_image(file: Path, folder: Path, pixels_so_far: int) -> np.ndarray:
    """Decode one image after checking, from its header, that it fits the memory budget."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            channels = 1 if img.mode in ("L", "I") else 3
            data_limits.check_image_budget(folder, pixels_so_far + img.width * img.height * channels)
            return np.asarray(img.convert("RGB" if channels == 3 else "L"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read the image {file.relative_to(folder)}: {data_limits.reason(exc)}",
            file=str(folder),
            field="data.path",
            fix="remove the file or save it again as PNG",
        ) from None


def load_dataset(spec: DataSpec, model: ModelRunner) -> Dataset:
    """Load the data, convert it to the model's layout and check shape, values and labels.

    Raises:
        DataError: also when memory runs out while loading (sizes are checked first, but the
            budget is a share of what was free at that moment).
    """
    try:
        return _load_dataset(spec, model)
    except MemoryError:
        raise DataError(
            "ran out of memory while loading the data",
            file=str(spec.path),
            field="data.path",
            fix="use a smaller data file (fewer samples), or free memory and run again",
        ) from None


def _load_dataset(spec: DataSpec, model: ModelRunner) -> Dataset:
    path = Path(spec.path)
    x, y, names = load_arrays(spec, path)
    if spec.format == "image_folder" or path.is_dir():
        low, high = model.value_range
        x = x * (high - low) + low
    x, y = np.asarray(x), np.asarray(y)
    if spec.limit:
        x, y = x[: spec.limit], y[: spec.limit]
    _check_declared_labels(model)
    y, labels_read = class_indices(y, model.class_labels, path, model.spec.labels)  # text or 1, 5, 9
    _check_values(x, y, path, model)
    data_layout = spec.layout or (Layout.NHWC if path.is_dir() else model.layout)
    x = _to_model_layout(x.astype(np.float32), data_layout, model, path)
    kind = "tabular" if model.layout == Layout.FLAT and data_layout == Layout.FLAT else "image"
    feature_names = names or tuple(str(i) for i in range(x.shape[1])) if x.ndim == 2 else names
    check_features(spec.features or (), x, feature_names, path, csv=bool(names))
    return Dataset(
        x=x,
        y=y.astype(np.int64),
        layout=model.layout,
        kind=kind,
        path=path,
        sha256=sha256_file(path),
        feature_names=tuple(feature_names),
        features=tuple(spec.features or ()),
        repeats=repeated_inputs(x),
        labels_read=labels_read,
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
            f"labels span [{int(y.min())}, {int(y.max())}] but the model gives {n_classes} outputs "
            f"per sample (scores of classes 0..{n_classes - 1}"
            + (f", the model's classes {model.class_labels} in order" if model.class_labels else "")
            + f", from its output {model.output_name!r})",
            file=str(path),
            field="data.path",
            fix=f"store y as class indices 0..{n_classes - 1} in the model's class order; if another "
            f"output holds the class scores, set model.output_name to it (outputs: {model.outputs_listing()})",
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
