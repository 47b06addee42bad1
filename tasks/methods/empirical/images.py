"""Image plumbing shared by corruptions and geometric transforms: layouts, value ranges, kernels.

Every image function of this package works on float32 arrays (N, H, W, C) with values in [0, 1];
``to_unit`` / ``from_unit`` convert from and back to the model's layout and value range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnassay.schemas.goals import Layout

IMAGENET_SIDE = 224.0  # ImageNet-C parameters are defined for 224 x 224 images


def to_unit(x: np.ndarray, layout: Layout | str, value_range: tuple[float, float]) -> np.ndarray:
    """Model-layout data-space images -> (N, H, W, C) float32 in [0, 1]."""
    low, high = value_range
    nhwc = np.transpose(x, (0, 2, 3, 1)) if Layout(layout) == Layout.NCHW else x
    return ((nhwc.astype(np.float32) - low) / (high - low)).astype(np.float32)


def from_unit(x: np.ndarray, layout: Layout | str, value_range: tuple[float, float]) -> np.ndarray:
    """(N, H, W, C) in [0, 1] -> model layout in the value range (clipped), float32."""
    low, high = value_range
    out = np.clip(x, 0.0, 1.0) * (high - low) + low
    out = np.transpose(out, (0, 3, 1, 2)) if Layout(layout) == Layout.NCHW else out
    return np.ascontiguousarray(np.clip(out, low, high), dtype=np.float32)


def size_scale(x: np.ndarray) -> float:
    """Image side relative to ImageNet-C's 224 pixels; spatial parameters are multiplied by it."""
    return min(x.shape[1], x.shape[2]) / IMAGENET_SIDE


def grey(x: np.ndarray) -> np.ndarray:
    """Luminance (N, H, W, 1) of RGB images (ITU-R 601 weights); grey images are returned as they are."""
    if x.shape[-1] != 3:
        return x.mean(axis=-1, keepdims=True)
    return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the spatial axes with a standard deviation in pixels (reflecting edges)."""
    if sigma <= 0:
        return x
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect", truncate=3.0)


def convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every image and channel with one 2-D kernel (reflecting edges)."""
    return ndimage.convolve(x, kernel[None, :, :, None], mode="reflect")


def disk_kernel(radius: float, alias_sigma: float, supersample: int = 8) -> np.ndarray:
    """Anti-aliased disk (area coverage by supersampling) blurred by ``alias_sigma``, summing to 1.

    Coverage is continuous in the radius, so sub-pixel radii of small images still grow smoothly.
    """
    half = int(np.ceil(radius + 2 * alias_sigma)) + 1
    fine = (np.arange((2 * half + 1) * supersample) + 0.5) / supersample - half - 0.5
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2 <= radius**2).astype(np.float64)
    kernel = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean(axis=(1, 3))
    kernel[half, half] = max(kernel[half, half], 1e-12)
    kernel = ndimage.gaussian_filter(kernel, alias_sigma) if alias_sigma > 0 else kernel
    return (kernel / kernel.sum()).astype(np.float32)


def motion_kernel(length: float, sigma: float, angle_deg: float, supersample: int = 16) -> np.ndarray:
    """One-sided motion-blur line of ``length`` pixels at an angle, Gaussian-weighted (sigma) along it.

    Points along the line are splatted bilinearly, so the kernel changes smoothly with the length.
    """
    half = int(np.ceil(length)) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    steps = max(2, int(np.ceil(length * supersample)) + 1)
    t = np.linspace(0.0, length, steps)
    weights = np.exp(-(t**2) / (2 * max(sigma, 1e-6) ** 2))
    rad = np.deg2rad(angle_deg)
    rows, cols = half - t * np.sin(rad), half + t * np.cos(rad)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, dc, share in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        np.add.at(kernel, (np.clip(r0 + dr, 0, 2 * half), np.clip(c0 + dc, 0, 2 * half)), weights * share)
    return (kernel / kernel.sum()).astype(np.float32)


def warp(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    order: int = 1,
    mode: str = "reflect",
    cval: float = 0.0,
) -> np.ndarray:
    """Sample every channel of image batch ``x`` at per-image source coordinates (N, H, W)."""
    n, h, w, c = x.shape
    idx_n = np.broadcast_to(np.arange(n)[:, None, None, None], (n, h, w, c))
    idx_c = np.broadcast_to(np.arange(c)[None, None, None, :], (n, h, w, c))
    coords = np.stack(
        [
            idx_n,
            np.broadcast_to(rows[..., None], (n, h, w, c)),
            np.broadcast_to(cols[..., None], (n, h, w, c)),
            idx_c,
        ]
    )
    return ndimage.map_coordinates(x, coords, order=order, mode=mode, cval=cval).astype(np.float32)


def affine_warp(
    x: np.ndarray, matrix: np.ndarray, *, mode: str = "constant", cval: float = 0.0
) -> np.ndarray:
    """Apply a 2x3 affine map (output pixel -> source pixel, about the image centre) to a batch."""
    _, h, w, _ = x.shape
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    full = np.eye(4)
    full[1:3, 1:3] = matrix[:, :2]
    offset = np.zeros(4)
    offset[1:3] = centre - matrix[:, :2] @ centre + matrix[:, 2]
    return ndimage.affine_transform(x, full, offset=offset, order=1, mode=mode, cval=cval).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Random smooth field (N, H, W) in [-1, 1]: Gaussian-smoothed uniform noise, peak-normalised."""
    noise = rng.uniform(-1.0, 1.0, size=shape)
    field = ndimage.gaussian_filter(noise, sigma=(0, sigma, sigma), mode="reflect")
    peak = np.abs(field).reshape(shape[0], -1).max(axis=1).reshape(-1, 1, 1)
    return field / np.maximum(peak, 1e-12)


def fractal_field(rng: np.random.Generator, shape: tuple[int, int, int], beta: float) -> np.ndarray:
    """Plasma-like fractal noise (N, H, W) in [0, 1] by spectral synthesis with power 1/f^beta.

    Frequencies are relative to the image side, so the pattern looks alike at every resolution.
    """
    n, h, w = shape
    fy = np.fft.fftfreq(h)[:, None] * h
    fx = np.fft.rfftfreq(w)[None, :] * w
    freq = np.sqrt(fy**2 + fx**2)
    freq[0, 0] = 1.0
    amplitude = freq ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    phases = rng.uniform(0, 2 * np.pi, size=(n, *amplitude.shape))
    field = np.fft.irfft2(amplitude * np.exp(1j * phases), s=(h, w), axes=(1, 2))
    low = field.reshape(n, -1).min(axis=1).reshape(-1, 1, 1)
    high = field.reshape(n, -1).max(axis=1).reshape(-1, 1, 1)
    return (field - low) / np.maximum(high - low, 1e-12)
