"""Offline texture sources for the shapes benchmark: crops of scikit-image's photographs.

Backgrounds and object fills are square crops of the photographs and textures bundled with
scikit-image (no download needed), taken at a random scale, flipped/rotated by multiples of
90 degrees and colour-jittered. A crop is fully described by a :class:`TextureParams`, and
:func:`render_texture` is a pure function of it, so an image can be re-rendered exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import skimage.data
from skimage.transform import rescale

#: Bundled RGB photographs.
RGB_SOURCES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)
#: Bundled greyscale photographs and textures (stacked to RGB, then tinted).
GREY_SOURCES: tuple[str, ...] = (
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "page",
    "text",
    "clock",
    "cell",
    "checkerboard",
)
#: All texture sources, in the order :attr:`TextureParams.source` indexes them.
TEXTURE_SOURCES: tuple[str, ...] = RGB_SOURCES + GREY_SOURCES

#: Scale factors of the pyramid levels (crops are taken at one level, without resampling).
PYRAMID_SCALES: tuple[float, ...] = (1.5, 1.0, 0.7, 0.5, 0.35, 0.25)

_MAX_SIDE = 640  # sources are first shrunk so their longer side is at most this


@dataclass(frozen=True)
class TextureParams:
    """Everything needed to render one square texture crop (see :func:`render_texture`).

    Attributes:
        source: index into :data:`TEXTURE_SOURCES`.
        level: index into the source's usable pyramid levels (:func:`source_levels`).
        top, left: top-left corner of the crop in that level, in pixels.
        rot90: number of quarter turns applied to the crop.
        flip: whether the crop is mirrored left-right (after the rotation).
        contrast: factor applied to deviations from the crop's mean colour.
        brightness: added to every channel after the contrast change.
        saturation: 0 gives grey, 1 keeps the colours, >1 boosts them.
        tint: RGB colour the crop is blended towards.
        tint_weight: blend weight of ``tint`` (0 = none, 1 = a flat colour).
    """

    source: int
    level: int
    top: int
    left: int
    rot90: int
    flip: bool
    contrast: float
    brightness: float
    saturation: float
    tint: tuple[float, float, float]
    tint_weight: float


def _load_source(name: str) -> np.ndarray:
    """A bundled image as (H, W, 3) float32 in [0, 1], longer side at most ``_MAX_SIDE``."""
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3].astype(np.float32)
    if image.max() > 1.0:
        image /= 255.0
    longest = max(image.shape[:2])
    if longest > _MAX_SIDE:
        image = rescale(image, _MAX_SIDE / longest, channel_axis=-1, anti_aliasing=True)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def source_levels(size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """For every source, its pyramid levels (uint8, H x W x 3) that hold a ``size`` crop.

    Computed once per crop size and cached (a few seconds, tens of MB).
    """
    pyramids = []
    for name in TEXTURE_SOURCES:
        base = _load_source(name)
        levels = []
        for scale in PYRAMID_SCALES:
            if min(base.shape[:2]) * scale < size:
                continue
            level = base if scale == 1.0 else _rescale(base, scale)
            levels.append(np.round(level * 255.0).astype(np.uint8))
        if not levels:
            raise RuntimeError(f"texture source {name!r} is smaller than {size} px")
        pyramids.append(tuple(levels))
    return tuple(pyramids)


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an (H, W, 3) image by ``scale`` (anti-aliased when shrinking)."""
    out = rescale(image, scale, channel_axis=-1, anti_aliasing=scale < 1.0, order=1)
    return np.clip(out, 0.0, 1.0)


def sample_texture(
    rng: np.random.Generator,
    size: int,
    *,
    sources: tuple[int, ...] | None = None,
    tint_weight: tuple[float, float] = (0.0, 0.3),
    contrast: tuple[float, float] = (0.6, 1.3),
    flat_probability: float = 0.0,
) -> TextureParams:
    """Draw the parameters of a random ``size`` x ``size`` texture crop.

    Args:
        rng: the random stream to draw from.
        size: side of the crop in pixels.
        sources: indices of :data:`TEXTURE_SOURCES` to choose from (default: all).
        tint_weight: range of the blend weight towards a random colour.
        contrast: range of the contrast factor.
        flat_probability: chance that the crop is replaced by a flat random colour.
    """
    pool = tuple(range(len(TEXTURE_SOURCES))) if sources is None else sources
    source = int(pool[rng.integers(len(pool))])
    levels = source_levels(size)[source]
    level = int(rng.integers(len(levels)))
    height, width = levels[level].shape[:2]
    top = int(rng.integers(height - size + 1))
    left = int(rng.integers(width - size + 1))
    tint = tuple(float(v) for v in rng.uniform(0.0, 1.0, size=3))
    weight = float(rng.uniform(*tint_weight))
    if rng.uniform() < flat_probability:
        weight = 1.0
    return TextureParams(
        source=source,
        level=level,
        top=top,
        left=left,
        rot90=int(rng.integers(4)),
        flip=bool(rng.integers(2)),
        contrast=float(rng.uniform(*contrast)),
        brightness=float(rng.uniform(-0.12, 0.12)),
        saturation=float(rng.uniform(0.5, 1.5)),
        tint=tint,  # type: ignore[arg-type]
        tint_weight=weight,
    )


def render_texture(params: TextureParams, size: int) -> np.ndarray:
    """The crop described by ``params`` as (size, size, 3) float32 in [0, 1]."""
    level = source_levels(size)[params.source][params.level]
    crop = level[params.top : params.top + size, params.left : params.left + size]
    crop = np.rot90(crop, k=params.rot90)
    if params.flip:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(crop, dtype=np.float32)
    crop *= np.float32(1.0 / 255.0)
    return jitter_colour(crop, params)


def colour_transform(mean: np.ndarray, params: TextureParams) -> tuple[np.ndarray, np.ndarray]:
    """The affine colour map ``x -> x @ matrix + offset`` of ``params`` (before clipping).

    Composes, per pixel: contrast about the crop's ``mean`` colour, brightness shift,
    saturation about the pixel's grey value, then the blend towards ``tint``.
    """
    c, s, w = params.contrast, params.saturation, params.tint_weight
    grey = np.full((3, 3), 1.0 / 3.0)
    saturate = grey + s * (np.eye(3) - grey)  # symmetric: row or column vectors alike
    matrix = (1.0 - w) * c * saturate
    shifted = (1.0 - c) * np.asarray(mean, dtype=np.float64) + params.brightness
    offset = (1.0 - w) * (shifted @ saturate) + w * np.asarray(params.tint)
    return matrix.astype(np.float32), offset.astype(np.float32)


def jitter_colour(crop: np.ndarray, params: TextureParams) -> np.ndarray:
    """Apply the contrast, brightness, saturation and tint of ``params`` to ``crop``."""
    flat = crop.reshape(-1, 3)
    mean = np.ones(len(flat), dtype=np.float32) @ flat / len(flat)  # faster than .mean(0)
    matrix, offset = colour_transform(mean, params)
    out = flat @ matrix
    out += offset
    np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(crop.shape)
