"""Spatial and weather corruptions (zoom and glass blur, elastic, fog, snow, spatter, occlusion).

Inputs and outputs are (N, H, W, C) float32 in [0, 1]; spatial parameters are ImageNet-C's values
at 224 pixels scaled by ``min(H, W) / 224`` (Hendrycks & Dietterich, ICLR 2019). Random layers (snow,
spatter) are drawn on a grid of fixed size in 224-pixel units and resized, so a severity looks alike
at every resolution. The draws do not depend on the severity where that is possible, so a stronger
severity changes the same pixels more.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from nnassay.tasks.methods.empirical.images import (
    affine_warp,
    blur,
    convolve,
    fractal_field,
    grey,
    motion_kernel,
    size_scale,
    smooth_field,
    warp,
)

WATER = np.array([238, 238, 175], np.float32) / 255.0


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Average of centre zooms by factors 1 to 1.11/1.16/1.21/1.26/1.31 (ImageNet-C, Hendrycks &
    Dietterich 2019). Zoom factors are relative, so no size scaling is needed."""
    stop, step = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))[severity - 1]
    total = x.copy()
    zooms = np.arange(1.0, stop, step)
    for z in zooms:
        total += affine_warp(x, np.array([[1 / z, 0, 0], [0, 1 / z, 0]]), mode="nearest")
    return total / (len(zooms) + 1)


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, local pixel displacement, blur: (sigma, max shift, iterations) (.7, 1, 2), (.9, 2, 1),
    (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2) at 224 (ImageNet-C, Hendrycks & Dietterich 2019).

    ImageNet-C swaps pixels by whole-pixel offsets; here offsets are continuous (bilinear sampling),
    so the sub-pixel shifts of small images still act.
    """
    sigma, delta, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    scale = size_scale(x)
    n, h, w, _ = x.shape
    draws = rng.uniform(-1.0, 1.0, (3, 2, n, h, w))
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    out = blur(x, sigma * scale)
    for it in range(iterations):
        out = warp(out, rr + delta * scale * draws[it, 0], cc + delta * scale * draws[it, 1])
    return blur(out, sigma * scale)


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement of peak 1.2/2/3/4/5% of the image side (elastic distortion,
    Simard et al. 2003, as in ImageNet-C, Hendrycks & Dietterich 2019).

    ImageNet-C parameterises it by an (alpha, sigma, affine) triple that is not ordered in strength;
    here the field's shape is fixed (smoothing 5% of the side) and only its amplitude grows.
    """
    amplitude = (0.012, 0.02, 0.03, 0.04, 0.05)[severity - 1]
    n, h, w, _ = x.shape
    side = min(h, w)
    smooth = max(0.5, 0.05 * side)
    dy = smooth_field(rng, (n, h, w), smooth) * amplitude * side
    dx = smooth_field(rng, (n, h, w), smooth) * amplitude * side
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return warp(x, rr + dy, cc + dx)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Fractal fog of intensity 1.5/1.75/2/2.5/3 (after ImageNet-C, Hendrycks & Dietterich 2019).

    The plasma fractal is synthesised spectrally with power 1/f^(2 log2 1.7). ImageNet-C also varies
    the fractal's decay (2 to 1.4) with severity, which leaves severities 3 and 4 unordered in
    strength; here the decay is fixed at its middle value and only the intensity grows.
    """
    strength, decay = ((1.5, 1.7), (1.75, 1.7), (2.0, 1.7), (2.5, 1.7), (3.0, 1.7))[severity - 1]
    n, h, w, _ = x.shape
    layer = fractal_field(rng, (n, h, w), 2.0 * np.log2(decay))[..., None].astype(np.float32)
    peak = x.reshape(n, -1).max(axis=1).reshape(-1, 1, 1, 1)
    return (x + strength * layer) * peak / (peak + strength)


def _resize(fields: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize (N, g, g) float fields to (N, h, w): box averaging down, bilinear up (Pillow 'F')."""
    out = np.empty((len(fields), h, w), np.float32)
    for i, f in enumerate(fields):
        method = Image.Resampling.BOX if f.shape[0] >= h else Image.Resampling.BILINEAR
        out[i] = np.asarray(Image.fromarray(f.astype(np.float32), mode="F").resize((w, h), method))
    return out


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Snow flakes with motion streaks and a whitened scene (ImageNet-C, Hendrycks & Dietterich 2019).

    Parameters (mean, std, flake zoom, threshold, streak radius, streak sigma, scene blend) are
    ImageNet-C's. Flakes are thresholded on a grid of 224/zoom cells and resized to the image, so
    small images get proportionally small (faint, partial-pixel) flakes.
    """
    mean, std, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    )[severity - 1]
    n, h, w, _ = x.shape
    scale = size_scale(x)
    cells = max(2, round(224 / zoom))
    layer = rng.normal(mean, std, (n, cells, cells))
    layer = _resize(np.where(layer < threshold, 0.0, layer), h, w)[..., None]
    angles = np.asarray(rng.uniform(-135, -45, n))
    layer = np.stack(
        [
            convolve(f[None], motion_kernel(radius * scale, sigma * scale, a))[0]
            for f, a in zip(layer, angles, strict=True)
        ]
    )
    scene = keep * x + (1 - keep) * np.maximum(x, grey(x) * 1.5 + 0.5)
    return scene + layer + np.rot90(layer, 2, axes=(1, 2))


def spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Water drops that blur and tint what is under them, covering about 5/10/16/23/31% of the image
    with opacity .5/.6/.7/.8/.9 (after ImageNet-C's water spatter, Hendrycks & Dietterich 2019).

    ImageNet-C switches to dark mud at severities 4-5, which is milder than water on dark images;
    here all severities use water drops on the same drop field, so severities stay ordered.
    """
    level, opacity = ((1.6, 0.5), (1.3, 0.6), (1.0, 0.7), (0.75, 0.8), (0.5, 0.9))[severity - 1]
    n, h, w, c = x.shape
    liquid = rng.normal(0.65, 0.3, (n, 112, 112))
    liquid = blur(liquid[..., None], 1.5)[..., 0]
    z = (liquid - liquid.mean(axis=(1, 2), keepdims=True)) / liquid.std(axis=(1, 2), keepdims=True)
    mask = _resize((z > level).astype(np.float32), h, w)[..., None]
    tint = WATER if c == 3 else np.full(c, float(grey(WATER[None, None, None])[0, 0, 0, 0]), np.float32)
    target = 0.6 * blur(x, 3 * size_scale(x)) + 0.4 * tint
    return x + opacity * mask * (target - x)


def occlusion(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One square patch of a random flat colour, side 20/30/40/50/60% of the image, at a random
    centre (TR 24029-1 Annex A occlusion; cutout, DeVries & Taylor 2017). Not part of ImageNet-C.

    Pixel coverage is fractional at the patch edges, so tiny images get exact patch areas.
    """
    side = (0.2, 0.3, 0.4, 0.5, 0.6)[severity - 1]
    n, h, w, c = x.shape
    centres = rng.random((n, 2))
    colours = rng.random((n, c)).astype(np.float32)
    rows = _coverage(centres[:, 0] * h, side * h, h)
    cols = _coverage(centres[:, 1] * w, side * w, w)
    cover = (rows[:, :, None] * cols[:, None, :])[..., None].astype(np.float32)
    return x * (1 - cover) + colours[:, None, None, :] * cover


def _coverage(centre: np.ndarray, length: float, size: int) -> np.ndarray:
    """Share of each pixel [i, i+1) covered by the interval centred at ``centre`` (N, size)."""
    start, stop = centre[:, None] - length / 2, centre[:, None] + length / 2
    pixels = np.arange(size)[None, :]
    return np.clip(np.minimum(pixels + 1, stop) - np.maximum(pixels, start), 0.0, 1.0)
