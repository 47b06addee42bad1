"""Corruptions: severity orders the distortion at every size, layout and value range; outputs stay in range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnassay.schemas.threats import CORRUPTIONS
from nnassay.tasks.methods.empirical.corruptions import CORRUPTION_FUNCTIONS, corrupt, is_identity_on
from nnassay.tasks.methods.empirical.methods_corruption import geometric

# (side, channels, images): 8x8 grey digits, 28x28 MNIST, 32x32 colour, 224x224 colour
SIZES = [(8, 1, 4), (28, 1, 3), (32, 3, 3), (224, 3, 1)]
RANGES = [(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)]


def smooth_images(n: int, side: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random scenes in [0.1, 0.9] (NHWC), so blur and noise both show."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(
        rng.random((n, side, side, channels)), (0, side / 16 + 0.5, side / 16 + 0.5, 0)
    )
    low, high = base.min(), base.max()
    return ((base - low) / (high - low) * 0.8 + 0.1).astype(np.float32)


def distortion(name: str, x: np.ndarray, layout: str, value_range: tuple[float, float]) -> list[float]:
    out = []
    for severity in range(1, 6):
        xc = corrupt(x, name, severity, rng=np.random.default_rng(1), layout=layout, value_range=value_range)
        assert xc.shape == x.shape and xc.dtype == np.float32
        assert xc.min() >= value_range[0] and xc.max() <= value_range[1], f"{name} leaves the value range"
        out.append(float(np.abs(xc - x).mean() / (value_range[1] - value_range[0])))
    return out


def test_catalogue_matches_threat_schema() -> None:
    assert set(CORRUPTION_FUNCTIONS) == set(CORRUPTIONS)


@pytest.mark.parametrize("side,channels,n", SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_increases_distortion(name: str, side: int, channels: int, n: int) -> None:
    unit = smooth_images(n, side, channels)
    value_range = RANGES[hash((name, side)) % len(RANGES)]
    x = unit * (value_range[1] - value_range[0]) + value_range[0]
    d = distortion(name, x, "NHWC", value_range)
    assert all(b >= a - 1e-4 for a, b in zip(d, d[1:], strict=False)), f"{name} not ordered: {d}"
    if is_identity_on(name, channels, side):
        assert max(d) < 1e-3, f"{name} is declared (nearly) the identity at this size: {d}"
        return
    assert d[-1] > d[0] and d[-1] > 1e-4, f"{name}: severity 5 must distort more than severity 1: {d}"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_layouts_agree_and_rng_decides(name: str) -> None:
    x = smooth_images(2, 32, 3)
    nhwc = corrupt(x, name, 3, rng=np.random.default_rng(4), layout="NHWC", value_range=(0.0, 1.0))
    nchw = corrupt(
        np.transpose(x, (0, 3, 1, 2)),
        name,
        3,
        rng=np.random.default_rng(4),
        layout="NCHW",
        value_range=(0.0, 1.0),
    )
    np.testing.assert_allclose(np.transpose(nchw, (0, 2, 3, 1)), nhwc, atol=1e-6)
    again = corrupt(x, name, 3, rng=np.random.default_rng(4), layout="NHWC", value_range=(0.0, 1.0))
    np.testing.assert_array_equal(again, nhwc)


def test_severity_means_the_same_across_sizes() -> None:
    """Relative blur: a 224 scene and its 32-pixel down-sampling lose about the same detail."""
    big = smooth_images(1, 224, 1, seed=3)
    small = big.reshape(1, 32, 7, 32, 7, 1).mean(axis=(2, 4))
    for name in ("gaussian_blur", "zoom_blur", "glass_blur", "elastic_transform"):
        d_big = distortion(name, big, "NHWC", (0.0, 1.0))[4]
        d_small = distortion(name, small, "NHWC", (0.0, 1.0))[4]
        assert 0.3 < d_small / d_big < 3.0, (name, d_big, d_small)


@pytest.mark.parametrize(
    "transform,values",
    [
        ("rotation", [0.0, 10.0, 30.0]),
        ("translation", [0.0, 0.1, 0.3]),
        ("scaling", [1.0, 0.9, 0.6]),
        ("shear", [0.0, 10.0, 30.0]),
    ],
)
def test_geometric_identity_and_growth(transform: str, values: list[float]) -> None:
    x = np.transpose(smooth_images(2, 28, 1), (0, 3, 1, 2))
    d = [
        float(np.abs(geometric(x, transform, v, layout="NCHW", value_range=(0.0, 1.0)) - x).mean())
        for v in values
    ]
    assert d[0] < 1e-6 and d[0] < d[1] < d[2]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_cites_its_definition(name: str) -> None:
    """Each corruption names where its definition comes from: ImageNet-C, or TR 24029-1 Annex A."""
    doc = CORRUPTION_FUNCTIONS[name].__doc__ or ""
    assert "Hendrycks" in doc or "Annex A" in doc, f"{name} must cite ImageNet-C or TR 24029-1 Annex A"
    if "Not an ImageNet-C" in doc or "Not part of ImageNet-C" in doc:
        assert "Annex A" in doc, f"{name} is not from ImageNet-C and must say where it comes from"


def test_example_picture_is_a_deterministic_png_grid() -> None:
    import io

    from PIL import Image

    from nnassay.tasks.methods.empirical.pictures import CELL, side_by_side

    x = smooth_images(3, 8, 1)
    png = side_by_side(x, np.clip(x + 0.1, 0, 1), "NHWC", (0.0, 1.0), ["a", "b", "c"])
    assert png == side_by_side(x, np.clip(x + 0.1, 0, 1), "NHWC", (0.0, 1.0), ["a", "b", "c"])
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.width > 3 * CELL and picture.height > 3 * CELL  # three columns, three rows
