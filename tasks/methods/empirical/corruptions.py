"""Natural corruptions of images, five severities each (ISO/IEC TR 24029-1 Annex A; ImageNet-C).

Severities follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019 (ImageNet-C), with two rules that make a severity mean the
same at every resolution, layout and value range: images are normalised to [0, 1] (N, H, W, C) and
mapped back afterwards, and every spatial parameter (blur radii, displacements, flake sizes) is
multiplied by ``min(H, W) / 224``. Pure numpy / scipy / Pillow; the randomness comes from ``rng`` only.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image

from nnassay.schemas.goals import Layout
from nnassay.tasks.methods.empirical.images import (
    blur,
    convolve,
    disk_kernel,
    from_unit,
    grey,
    motion_kernel,
    size_scale,
    to_unit,
)
from nnassay.tasks.methods.empirical.weather import (
    elastic_transform,
    fog,
    glass_blur,
    occlusion,
    snow,
    spatter,
    zoom_blur,
)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

GREY_IDENTITY = ("saturate",)  # corruptions that cannot change a one-channel image
# Smallest image side at which the strongest severity acts: below it the scaled blur radius (or the
# pixelation target) is under half a pixel, so the corruption is (numerically) the identity.
MIN_SIDE = {"gaussian_blur": 16, "defocus_blur": 12, "pixelate": 57}


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, sigma .08/.12/.18/.26/.38 (ImageNet-C, Hendrycks & Dietterich 2019)."""
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return x + rng.standard_normal(x.shape).astype(np.float32) * sigma


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson (photon) noise with 60/25/12/5/3 photons per unit (ImageNet-C, Hendrycks & Dietterich 2019)."""
    photons = (60, 25, 12, 5, 3)[severity - 1]
    return (rng.poisson(np.clip(x, 0, 1) * photons) / photons).astype(np.float32)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise on 3/6/9/17/27% of values (ImageNet-C, Hendrycks & Dietterich 2019).

    The same draws serve every severity, so the corrupted values of a milder severity are a subset.
    """
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    hit, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
    return np.where(hit < amount, salt.astype(np.float32), x)


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative Gaussian noise x + x * N(0, c), c .15/.2/.35/.45/.6 (ImageNet-C, Hendrycks & Dietterich 2019)."""
    scale = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    return x + x * rng.standard_normal(x.shape).astype(np.float32) * scale


def uniform_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive uniform noise with the standard deviation of ImageNet-C's Gaussian noise.

    Not an ImageNet-C corruption (TR 24029-1 Annex A lists it); the half-widths are sqrt(3) times
    the Gaussian sigmas of Hendrycks & Dietterich 2019, so both noises have the same power.
    """
    half = np.sqrt(3.0) * (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return x + rng.uniform(-1.0, 1.0, x.shape).astype(np.float32) * np.float32(half)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, sigma 1/2/3/4/6 pixels at 224 (ImageNet-C extra, Hendrycks & Dietterich 2019)."""
    return blur(x, (1, 2, 3, 4, 6)[severity - 1] * size_scale(x))


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Disk (defocus) blur, radius 3/4/6/8/10 at 224 with aliasing blur (ImageNet-C, Hendrycks & Dietterich 2019)."""
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    scale = size_scale(x)
    return convolve(x, disk_kernel(radius * scale, alias * scale))


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Motion blur, radius 10/15/15/15/20 and sigma 3/5/8/12/15 at 224, random angle in [-45, 45] deg
    per image (ImageNet-C, Hendrycks & Dietterich 2019; a Gaussian-weighted line kernel replaces Wand)."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    scale = size_scale(x)
    angles = rng.uniform(-45, 45, len(x))
    return np.stack(
        [
            convolve(img[None], motion_kernel(radius * scale, sigma * scale, a))[0]
            for img, a in zip(x, angles, strict=True)
        ]
    )


def _hsv(x: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    hsv = rgb_to_hsv(np.clip(x, 0, 1))
    return hsv_to_rgb(np.clip(change(hsv), 0, 1)).astype(np.float32)


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness: value channel (HSV) + .1/.2/.3/.4/.5 (ImageNet-C, Hendrycks & Dietterich 2019).

    Grey images: the grey level is the value channel, so it is shifted directly.
    """
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    if x.shape[-1] != 3:
        return x + np.float32(shift)

    def lift(hsv: np.ndarray) -> np.ndarray:
        hsv[..., 2] += shift
        return hsv

    return _hsv(x, lift)


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction towards the image mean by factor .4/.3/.2/.1/.05 (ImageNet-C, Hendrycks & Dietterich 2019)."""
    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * np.float32(factor) + mean


def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Over-saturation S * a + b with (a, b) (1.5, 0), (2, 0), (3.5, .05), (5, .1), (20, .2).

    ImageNet-C (Hendrycks & Dietterich 2019) severities 1-2 desaturate (a = .3, .1) and 3-5 saturate,
    which is not ordered in strength; here every severity saturates, 3-5 keep ImageNet-C's spirit.
    Grey images have no saturation: the corruption is the identity and the method skips it.
    """
    if x.shape[-1] != 3:
        return x
    a, b = ((1.5, 0.0), (2.0, 0.0), (3.5, 0.05), (5.0, 0.1), (20.0, 0.2))[severity - 1]

    def boost(hsv: np.ndarray) -> np.ndarray:
        hsv[..., 1] = hsv[..., 1] * a + b * (hsv[..., 1] > 0)
        return hsv

    return _hsv(x, boost)


def _per_image(x: np.ndarray, op: Callable[[Image.Image], Image.Image], mode: str) -> np.ndarray:
    """Apply a Pillow operation to every image ('L'/'RGB' uint8) or every channel ('F' float)."""
    out = np.empty_like(x)
    if mode == "F":
        for i, img in enumerate(x):
            for c in range(x.shape[-1]):
                out[i, ..., c] = np.asarray(op(Image.fromarray(img[..., c], mode="F")), np.float32)
        return out
    for i, img in enumerate(x):
        channels = [img] if x.shape[-1] == 3 else [img[..., c : c + 1] for c in range(x.shape[-1])]
        done = []
        for part in channels:
            as_u8 = np.round(np.clip(part, 0, 1) * 255).astype(np.uint8)
            pil = Image.fromarray(as_u8 if part.shape[-1] == 3 else as_u8[..., 0])
            done.append(np.asarray(op(pil), np.float32).reshape(part.shape) / 255.0)
        out[i] = np.concatenate(done, axis=-1)
    return out


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at quality 25/18/15/10/7 (ImageNet-C, Hendrycks & Dietterich 2019; Pillow encoder)."""
    quality = (25, 18, 15, 10, 7)[severity - 1]

    def compress(img: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(img.mode)

    return _per_image(x, compress, "u8")


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box down-sampling to at most 224 x .6/.5/.4/.3/.25 pixels across and back (ImageNet-C,
    Hendrycks & Dietterich 2019: blocks of 1/factor pixels at 224).

    Scaled with the image: the effective resolution is capped at 134/112/90/67/56 pixels, so images
    that are already smaller (digits, MNIST, CIFAR) are unchanged.
    """
    factor = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    h, w = x.shape[1:3]
    ratio = min(1.0, factor / size_scale(x))
    if ratio >= 1.0:
        return x
    small = (max(1, round(w * ratio)), max(1, round(h * ratio)))

    def block(img: Image.Image) -> Image.Image:
        return img.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)

    return _per_image(x, block, "F")


CORRUPTION_FUNCTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "uniform_noise": uniform_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "glass_blur": glass_blur,
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
    "elastic_transform": elastic_transform,
    "fog": fog,
    "snow": snow,
    "spatter": spatter,
    "occlusion": occlusion,
}


def corrupt_unit(x: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt (N, H, W, C) images in [0, 1]; the result is clipped to [0, 1]."""
    if name not in CORRUPTION_FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {sorted(CORRUPTION_FUNCTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1 to 5, got {severity}")
    return np.clip(CORRUPTION_FUNCTIONS[name](x.astype(np.float32), severity, rng), 0, 1).astype(np.float32)


def corrupt(
    x: np.ndarray,
    name: str,
    severity: int,
    *,
    rng: np.random.Generator,
    layout: Layout | str,
    value_range: tuple[float, float],
) -> np.ndarray:
    """Corrupt images given in the model's layout and value range; same layout and range out."""
    unit = to_unit(x, layout, value_range)
    return from_unit(corrupt_unit(unit, name, severity, rng), layout, value_range)


def is_identity_on(name: str, channels: int, side: int | None = None) -> bool:
    """True when a corruption cannot change such images: saturate on grey images, and blurs or
    pixelation whose scaled size is under half a pixel at this image side (see ``MIN_SIDE``)."""
    return (name in GREY_IDENTITY and channels != 3) or (side is not None and side < MIN_SIDE.get(name, 0))


__all__ = ["CORRUPTION_FUNCTIONS", "MIN_SIDE", "corrupt", "corrupt_unit", "grey", "is_identity_on"]
