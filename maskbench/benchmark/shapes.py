"""A ground-truth benchmark: textured shapes over natural backgrounds, with exact masks.

Each image shows one object over a crop of a bundled scikit-image photograph or texture.
The class is carried by the object's *silhouette* only: the object's position, size
(object area 10%-30% of the image), rotation and mirror image, its fill (a crop of another
photograph or texture, tinted towards a random colour, or a flat colour) and the
background are all drawn independently of the class. The only class-dependent step is
the choice of shape, so colour, texture and area carry no class information.

Shapes are rasterised without anti-aliasing by an exact inside-test at the pixel centres,
so the object pixels are exactly ``masks``: every pixel outside the mask is the background
pixel unchanged, every pixel inside is the fill pixel.

Every sample is a pure function of ``(seed, split, index)`` (its own random stream), so
the same index always gives the same image, whatever ``n`` or ``start`` is asked for, and
the train and test splits use different streams.

Example::

    ds = generate_shapes(1000, seed=0, split="test")
    ds.images  # (1000, 3, 96, 96) float32 in [0, 1]
    ds.masks  # (1000, 1, 96, 96) bool, True on the object
    ds.labels  # (1000,) int64, index into ds.classes
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from maskbench.benchmark.textures import (
    TEXTURE_SOURCES,
    TextureParams,
    render_texture,
    sample_texture,
)

#: Class names, in label order.
SHAPE_CLASSES: tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "l_shape",
)

#: Range of the object's area as a fraction of the image area (uniform, every class).
AREA_RANGE: tuple[float, float] = (0.10, 0.30)

#: Smallest distance (RGB, [0, 1] scale) between the mean colours of fill and background
#: under the object: fills closer than this are re-drawn so the silhouette stays visible.
MIN_FILL_CONTRAST: float = 0.25

_SPLIT_STREAMS: dict[str, int] = {"train": 0x5452_4149, "test": 0x5445_5354}
_MARGIN = 1.0  # pixels between the object's bounding circle and the image border
_FILL_ATTEMPTS = 8

InsideTest = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- geometry


def _regular_star(points: int, inner: float) -> np.ndarray:
    """Vertices of a star with ``points`` tips on the unit circle and inner radius ``inner``."""
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_polygon(half_width: float) -> np.ndarray:
    """A plus sign whose arm corners lie on the unit circle."""
    t = half_width
    arm = math.sqrt(1.0 - t * t)
    quarter = [(arm, -t), (arm, t), (t, t), (t, arm)]
    vertices = []
    for k in range(4):  # rotate the quarter by k * 90 degrees
        c, s = math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)
        vertices += [(c * x - s * y, s * x + c * y) for x, y in quarter]
    return np.round(np.asarray(vertices), 12)


_L_SHAPE = np.asarray([(-1, -1), (1, -1), (1, 0), (0, 0), (0, 1), (-1, 1)], float) / math.sqrt(2)
_SQUARE = np.asarray([(-1, -1), (1, -1), (1, 1), (-1, 1)], float) / math.sqrt(2)


def inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd inside test of the points ``(u, v)`` against a closed polygon."""
    inside = np.zeros(np.broadcast(u, v).shape, dtype=bool)
    x0, y0 = vertices[-1]
    for x1, y1 in vertices:
        crosses = (y1 > v) != (y0 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (v - y1) * (x0 - x1) / (y0 - y1)
        inside ^= crosses & (u < x_at)
        x0, y0 = x1, y1
    return inside


def _polygon_test(vertices: np.ndarray) -> InsideTest:
    return lambda u, v: inside_polygon(u, v, vertices)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic algebraic heart (x^2 + y^2 - 1)^3 <= x^2 y^3, recentred and scaled so
    # that its smallest enclosing circle is (about) the unit circle; v points down.
    x2 = (1.25 * u) ** 2
    y = 0.25 - 1.25 * v
    return (x2 + y * y - 1.0) ** 3 <= x2 * y**3


#: Vertices (unit scale, in the (u, v) frame of :func:`shape_mask`) of the polygonal classes.
POLYGONS: dict[str, np.ndarray] = {
    "square": _SQUARE,
    "triangle": _regular_star(3, 0.5)[::2],
    "star": _regular_star(5, 0.5),
    "cross": _cross_polygon(1.0 / 3.0),
    "l_shape": _L_SHAPE,
}

_SHAPE_TESTS: dict[str, InsideTest] = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "square": _polygon_test(POLYGONS["square"]),
    "triangle": _polygon_test(POLYGONS["triangle"]),
    "star": _polygon_test(POLYGONS["star"]),
    "cross": _polygon_test(POLYGONS["cross"]),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55**2),
    "crescent": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.8**2),
    "heart": _heart,
    "l_shape": _polygon_test(POLYGONS["l_shape"]),
}
assert tuple(_SHAPE_TESTS) == SHAPE_CLASSES


@functools.cache
def unit_area(shape: str) -> float:
    """Area of ``shape`` at unit scale (every shape fits the unit circle), by quadrature."""
    grid = (np.arange(2000) + 0.5) / 1000.0 - 1.0
    u, v = np.meshgrid(grid, grid)
    return float(_SHAPE_TESTS[shape](u, v).mean() * 4.0)


def shape_mask(
    shape: str,
    size: int,
    centre: tuple[float, float],
    scale: float,
    angle: float,
    mirror: bool,
) -> np.ndarray:
    """Exact (size, size) bool mask: pixels whose centre lies inside the placed shape.

    Args:
        shape: one of :data:`SHAPE_CLASSES`.
        size: image side in pixels.
        centre: (x, y) of the shape's centre in pixel coordinates (pixel (i, j) has its
            centre at x = j + 0.5, y = i + 0.5).
        scale: radius in pixels of the shape's enclosing unit circle.
        angle: rotation in radians.
        mirror: whether the shape is mirrored (before rotating).
    """
    coords = np.arange(size, dtype=np.float64) + 0.5
    x, y = np.meshgrid(coords - centre[0], coords - centre[1])
    c, s = math.cos(angle), math.sin(angle)
    u = (c * x + s * y) / scale
    v = (-s * x + c * y) / scale
    if mirror:
        u = -u
    return _SHAPE_TESTS[shape](u, v)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SampleParams:
    """Everything that defines one benchmark image (see :func:`render_sample`).

    Attributes:
        size: image side in pixels the sample was drawn for.
        index: the sample's index within its split.
        label: class index into :data:`SHAPE_CLASSES`.
        centre: (x, y) of the object in pixels.
        scale: radius in pixels of the object's enclosing circle.
        angle: rotation of the object in radians.
        mirror: whether the object is mirrored.
        background: the background crop.
        fill: the crop that fills the object.
    """

    size: int
    index: int
    label: int
    centre: tuple[float, float]
    scale: float
    angle: float
    mirror: bool
    background: TextureParams
    fill: TextureParams

    @property
    def shape(self) -> str:
        """The class name of the object."""
        return SHAPE_CLASSES[self.label]


def sample_rng(index: int, *, seed: int = 0, split: str = "train") -> np.random.Generator:
    """The random stream of one sample, keyed by ``(seed, split, index)`` only."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    return np.random.default_rng([_SPLIT_STREAMS[split], int(seed), int(index)])


def _sample_placement(
    rng: np.random.Generator, shape: str, size: int
) -> tuple[tuple[float, float], float, float, bool]:
    """Draw centre, scale, angle and mirror so the area is in AREA_RANGE, fully inside."""
    area = rng.uniform(*AREA_RANGE) * size * size
    scale = math.sqrt(area / unit_area(shape))
    low, high = scale + _MARGIN, size - scale - _MARGIN
    if low > high:
        raise ValueError(f"a {shape} of area {area:.0f} px does not fit a {size} px image")
    centre = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
    return centre, scale, float(rng.uniform(0.0, 2.0 * math.pi)), bool(rng.integers(2))


def _mean_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask.reshape(-1).astype(np.float32)
    return weights @ image.reshape(-1, 3) / weights.sum()


def _sample_fill(
    rng: np.random.Generator, size: int, background: TextureParams, mask: np.ndarray
) -> TextureParams:
    """Draw a fill from another source whose mean colour differs from the background's."""
    others = tuple(i for i in range(len(TEXTURE_SOURCES)) if i != background.source)
    bg_mean = _mean_colour(render_texture(background, size), mask)
    fill = None
    for _ in range(_FILL_ATTEMPTS):
        fill = sample_texture(
            rng,
            size,
            sources=others,
            tint_weight=(0.3, 0.9),
            contrast=(0.2, 0.9),
            flat_probability=0.2,
        )
        fill_mean = _mean_colour(render_texture(fill, size), mask)
        if np.linalg.norm(fill_mean - bg_mean) >= MIN_FILL_CONTRAST:
            return fill
    assert fill is not None
    # Fall back to a strong tint towards the far corner of the colour cube.
    far = tuple(float(v) for v in np.where(bg_mean > 0.5, 0.0, 1.0))
    return dataclasses.replace(fill, tint=far, tint_weight=0.85)


def sample_params(
    index: int, *, size: int = 96, seed: int = 0, split: str = "train"
) -> SampleParams:
    """The parameters of sample ``index`` of the ``(seed, split)`` benchmark."""
    rng = sample_rng(index, seed=seed, split=split)
    label = index % len(SHAPE_CLASSES)
    centre, scale, angle, mirror = _sample_placement(rng, SHAPE_CLASSES[label], size)
    background = sample_texture(rng, size, contrast=(0.4, 1.1))
    mask = shape_mask(SHAPE_CLASSES[label], size, centre, scale, angle, mirror)
    fill = _sample_fill(rng, size, background, mask)
    return SampleParams(size, index, label, centre, scale, angle, mirror, background, fill)


def render_sample(params: SampleParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one sample: ``(image, mask, background)``.

    ``image`` and ``background`` are (size, size, 3) float32 in [0, 1], ``mask`` is
    (size, size) bool; ``image`` is the fill where ``mask`` and ``background`` elsewhere.
    """
    size = params.size
    mask = shape_mask(params.shape, size, params.centre, params.scale, params.angle, params.mirror)
    background = render_texture(params.background, size)
    fill = render_texture(params.fill, size)
    image = np.where(mask[..., None], fill, background)
    return image, mask, background


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class ShapesDataset:
    """A batch of benchmark images with their exact object masks.

    Attributes:
        images: (n, 3, size, size) float32 in [0, 1], pixel space.
        masks: (n, 1, size, size) bool, True on the object's pixels.
        labels: (n,) int64 class indices into ``classes``.
        classes: the class names.
        indices: (n,) int64 sample indices within the split.
        seed: the benchmark seed.
        split: ``"train"`` or ``"test"``.
        backgrounds: (n, 3, size, size) float32, the images without the object, or None
            when not requested.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    indices: torch.Tensor
    seed: int
    split: str
    backgrounds: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of samples."""
        return int(self.labels.shape[0])


def generate_shapes(
    n: int,
    *,
    size: int = 96,
    seed: int = 0,
    split: str = "train",
    start: int = 0,
    with_backgrounds: bool = False,
) -> ShapesDataset:
    """Generate samples ``start, ..., start + n - 1`` of the ``(seed, split)`` benchmark.

    Labels cycle through the classes (sample ``i`` has label ``i % len(classes)``), so
    any ``len(classes)`` consecutive samples hold every class once.

    Args:
        n: number of samples.
        size: image side in pixels (a multiple of 32 suits stride-32 CNNs).
        seed: benchmark seed; ``split`` picks a separate stream for train and test.
        split: ``"train"`` or ``"test"``.
        start: index of the first sample.
        with_backgrounds: also return each image without its object.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    images = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    backgrounds = np.empty((n, size, size, 3), dtype=np.float32) if with_backgrounds else None
    labels = np.empty(n, dtype=np.int64)
    for k in range(n):
        params = sample_params(start + k, size=size, seed=seed, split=split)
        image, mask, background = render_sample(params)
        images[k], masks[k], labels[k] = image, mask, params.label
        if backgrounds is not None:
            backgrounds[k] = background
    return ShapesDataset(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        masks=torch.from_numpy(masks).unsqueeze(1),
        labels=torch.from_numpy(labels),
        classes=SHAPE_CLASSES,
        indices=torch.arange(start, start + n, dtype=torch.int64),
        seed=seed,
        split=split,
        backgrounds=(
            None
            if backgrounds is None
            else torch.from_numpy(backgrounds).permute(0, 3, 1, 2).contiguous()
        ),
    )
