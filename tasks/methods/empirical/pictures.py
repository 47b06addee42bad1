"""Example pictures for the dossier: originals next to their perturbed versions (Pillow)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nnassay.schemas.goals import Layout
from nnassay.schemas.results import ArtifactRef
from nnassay.tasks.methods.empirical.images import to_unit
from nnassay.tasks.methods.registry import RunContext

CELL = 128  # pixels per shown image (nearest-neighbour scaling keeps small images crisp)
TITLE = 16  # pixels of the caption line above each image
PAD = 6


def _tile(img: np.ndarray) -> Image.Image:
    """One (H, W, C) image in [0, 1] as an RGB tile of CELL pixels on its longer side."""
    rgb = np.repeat(img[..., :1], 3, axis=-1) if img.shape[-1] != 3 else img[..., :3]
    pixels = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    h, w = pixels.shape[:2]
    scale = CELL / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return Image.fromarray(pixels, mode="RGB").resize(size, Image.Resampling.NEAREST)


def side_by_side(
    original: np.ndarray,
    perturbed: np.ndarray,
    layout: Layout | str,
    value_range: tuple[float, float],
    labels: Sequence[str],
) -> bytes:
    """PNG with one row per sample: original, perturbed, amplified absolute difference.

    Drawn with Pillow (a few milliseconds; a matplotlib figure cost more than the attack itself on
    small images). Deterministic: the same arrays give the same bytes.
    """
    before, after = to_unit(original, layout, value_range), to_unit(perturbed, layout, value_range)
    rows = len(before)
    width = 3 * CELL + 4 * PAD
    sheet = Image.new("RGB", (width, rows * (CELL + TITLE + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i in range(rows):
        diff = np.abs(after[i] - before[i])
        peak = float(diff.max()) or 1.0
        top = PAD + i * (CELL + TITLE + PAD)
        for k, (img, title) in enumerate(
            (
                (before[i], "original"),
                (after[i], str(labels[i])),
                (diff / peak, f"|difference| x{1 / peak:.1f}"),
            )
        ):
            left = PAD + k * (CELL + PAD)
            draw.text((left, top), title[:24], fill="black", font=font)
            sheet.paste(_tile(img), (left, top + TITLE))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def save_examples(
    ctx: RunContext,
    name: str,
    caption: str,
    original: np.ndarray,
    perturbed: np.ndarray,
    labels: Sequence[str],
    limit: int = 4,
) -> list[ArtifactRef]:
    """Save up to ``limit`` image examples as a PNG artifact (nothing for tabular data)."""
    if ctx.data.kind != "image" or not len(original) or original.ndim != 4:
        return []
    png = side_by_side(
        original[:limit], perturbed[:limit], ctx.model.layout, ctx.model.value_range, list(labels)[:limit]
    )
    return [ctx.save_artifact(name, png, "image/png", caption)]
