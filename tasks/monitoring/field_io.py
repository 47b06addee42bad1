"""Load field data: one file or a folder of batches (npz, CSV, image folders), labels optional.

Every batch goes through ``tasks/io/data_io.load_dataset``, so field data are checked and laid out
exactly like the assessed data. A batch without labels (an npz without ``y``, a CSV without the
label column, a folder of loose images) is loaded from a temporary copy given dummy labels, and
its labels are then set to ``UNLABELLED``.
"""

from __future__ import annotations

import csv
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnassay.schemas.goals import DataSpec
from nnassay.tasks.errors import DataError
from nnassay.tasks.io import data_limits
from nnassay.tasks.io.data_io import IMAGE_SUFFIXES, Dataset, load_dataset
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.io.model_io import ModelRunner

UNLABELLED = -1  # label value of every sample of a batch without labels
BATCH_SUFFIXES = (".npz", ".csv")


@dataclass(frozen=True)
class FieldBatch:
    """One batch of field data, as loaded."""

    name: str  # file or folder name
    data: Dataset  # y is UNLABELLED throughout when the batch has no labels
    labelled: bool
    modified: float  # POSIX time of the file's last change: the batch time (MLflow step)


def load_field(path: Path, data: DataSpec, model: ModelRunner) -> list[FieldBatch]:
    """The batches at ``path`` (a file, an image folder, or a folder of such), sorted by name.

    ``data`` is the spec's reference data entry: its layout, label column and features apply.

    Raises:
        DataError: the path does not exist, holds no batch, or a batch cannot be used.
    """
    if not path.exists():
        raise DataError(
            f"field data {path} does not exist", file=str(path), fix="pass an existing file or folder"
        )
    if path.is_file() or _holds_images(path):
        return [load_batch(path, data, model)]
    batches = [p for p in sorted(path.iterdir()) if _is_batch(p)]
    if not batches:
        raise DataError(
            f"{path} holds no field batch",
            file=str(path),
            fix="put .npz or .csv files, or image folders (<folder>/<class>/<image> or loose images), in it",
        )
    return [load_batch(p, data, model) for p in batches]


def _is_batch(path: Path) -> bool:
    return path.suffix.lower() in BATCH_SUFFIXES if path.is_file() else _holds_images(path)


def _holds_images(folder: Path) -> bool:
    """Images directly inside (unlabelled) or in class sub-folders (labelled)."""
    return _loose_images(folder) != [] or any(_loose_images(p) for p in folder.iterdir() if p.is_dir())


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_batch(path: Path, data: DataSpec, model: ModelRunner) -> FieldBatch:
    """One batch, labelled when its file carries labels."""
    spec = data.model_copy(update={"path": path, "format": "auto", "limit": None})
    with tempfile.TemporaryDirectory(prefix="nnassay-field-") as tmp:
        stand_in = _labelled_stand_in(path, data.label_column, Path(tmp))
        loaded = load_dataset(spec.model_copy(update={"path": stand_in or path}), model)
    if stand_in is not None:
        loaded = replace(
            loaded, y=np.full(len(loaded), UNLABELLED, np.int64), path=path, sha256=sha256_file(path)
        )
    return FieldBatch(path.name, loaded, stand_in is None, path.stat().st_mtime)


def _labelled_stand_in(path: Path, label_column: str, tmp: Path) -> Path | None:
    """A copy of an unlabelled batch with dummy labels 0, or None when the batch has labels."""
    if path.is_dir():
        return _image_stand_in(path, tmp) if _loose_images(path) else None
    if path.suffix.lower() == ".npz":
        return _npz_stand_in(path, tmp)
    if path.suffix.lower() == ".csv":
        return _csv_stand_in(path, label_column, tmp)
    return None


def _npz_stand_in(path: Path, tmp: Path) -> Path | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).stem for n in archive.namelist()}
    except (zipfile.BadZipFile, OSError):
        return None  # load_dataset names the problem
    if "y" in names:
        return None
    data_limits.check_npz(path, ("x",))
    with np.load(path, allow_pickle=False) as archive:
        x = archive["x"]
    out = tmp / "batch.npz"
    np.savez(out, x=x, y=np.zeros(len(x), np.int64))
    return out


def _csv_stand_in(path: Path, label_column: str, tmp: Path) -> Path | None:
    data_limits.check_csv(path)
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        rows = list(csv.reader(handle))
    if not rows or label_column in rows[0]:
        return None
    out = tmp / "batch.csv"
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*rows[0], label_column])
        writer.writerows([*row, "0"] for row in rows[1:])
    return out


def _image_stand_in(path: Path, tmp: Path) -> Path:
    folder = tmp / "images"
    (folder / "0").mkdir(parents=True)
    for image in _loose_images(path):
        (folder / "0" / image.name).symlink_to(image.resolve())
    return folder
