"""Tests of the offline shapes benchmark generator (maskbench.benchmark.shapes)."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
from skimage.draw import polygon2mask

from maskbench.benchmark import shapes
from maskbench.benchmark.shapes import (
    AREA_RANGE,
    POLYGONS,
    SHAPE_CLASSES,
    generate_shapes,
    render_sample,
    sample_params,
    shape_mask,
)

SIZE = 96
K = len(SHAPE_CLASSES)


@pytest.fixture(scope="module")
def small() -> shapes.ShapesDataset:
    """A small test-split batch with backgrounds (every class 4 times)."""
    return generate_shapes(4 * K, size=SIZE, seed=0, split="test", with_backgrounds=True)


def test_shapes_dtypes_and_ranges(small: shapes.ShapesDataset) -> None:
    n = 4 * K
    assert small.images.shape == (n, 3, SIZE, SIZE) and small.images.dtype == torch.float32
    assert small.masks.shape == (n, 1, SIZE, SIZE) and small.masks.dtype == torch.bool
    assert small.labels.shape == (n,) and small.labels.dtype == torch.int64
    assert small.backgrounds is not None and small.backgrounds.shape == small.images.shape
    assert float(small.images.min()) >= 0.0 and float(small.images.max()) <= 1.0
    assert small.classes == SHAPE_CLASSES and 6 <= K <= 10
    assert torch.equal(small.indices, torch.arange(n))
    assert len(small) == n


def test_every_class_appears_equally(small: shapes.ShapesDataset) -> None:
    counts = torch.bincount(small.labels, minlength=K)
    assert counts.tolist() == [4] * K


def test_outside_the_mask_is_the_background_exactly(small: shapes.ShapesDataset) -> None:
    outside = ~small.masks.expand_as(small.images)
    assert torch.equal(small.images[outside], small.backgrounds[outside])


def test_inside_the_mask_is_object_not_background(small: shapes.ShapesDataset) -> None:
    # The fill is a different crop with a different mean colour: nearly every object
    # pixel must differ from the background pixel it covers (flat fills may coincide
    # with a background pixel only by chance).
    differs = (small.images != small.backgrounds).any(dim=1, keepdim=True)
    for k in range(len(small)):
        mask = small.masks[k]
        assert differs[k][mask].float().mean() > 0.95, k


def test_object_pixels_do_not_depend_on_the_background() -> None:
    """Re-render samples over another background: object pixels and mask are unchanged."""
    for index in range(2 * K):
        params = sample_params(index, size=SIZE, seed=3, split="train")
        other = sample_params(index + 1000, size=SIZE, seed=3, split="train")
        image, mask, _ = render_sample(params)
        swapped = dataclasses.replace(params, background=other.background)
        image2, mask2, background2 = render_sample(swapped)
        assert np.array_equal(mask, mask2)
        assert np.array_equal(image[mask], image2[mask])
        assert np.array_equal(image2[~mask], background2[~mask])
        assert not np.array_equal(image[~mask], image2[~mask])


def _vertices_in_pixels(params: shapes.SampleParams) -> np.ndarray:
    """The placed polygon's vertices as (row, col) with pixel (i, j) at (i, j)."""
    u, v = POLYGONS[params.shape].T
    if params.mirror:
        u = -u
    c, s = math.cos(params.angle), math.sin(params.angle)
    x = params.scale * (c * u - s * v) + params.centre[0]
    y = params.scale * (s * u + c * v) + params.centre[1]
    return np.stack([y - 0.5, x - 0.5], axis=1)


def test_polygon_masks_match_an_independent_rasteriser() -> None:
    """Polygonal classes agree pixel for pixel with skimage.draw.polygon2mask."""
    checked = 0
    for index in range(6 * K):
        params = sample_params(index, size=SIZE, seed=5, split="test")
        if params.shape not in POLYGONS:
            continue
        mask = render_sample(params)[1]
        reference = polygon2mask((SIZE, SIZE), _vertices_in_pixels(params))
        assert np.array_equal(mask, reference), (index, params.shape)
        checked += 1
    assert checked >= 6 * len(POLYGONS)


def test_round_masks_match_their_analytic_definition() -> None:
    """Disks, rings and crescents against distances to their circle centres."""
    grid = np.arange(SIZE) + 0.5
    x, y = np.meshgrid(grid, grid)
    for index in range(6 * K):
        params = sample_params(index, size=SIZE, seed=5, split="test")
        mask = render_sample(params)[1]
        cx, cy = params.centre
        r = np.hypot(x - cx, y - cy) / params.scale
        if params.shape == "disk":
            expected = r <= 1.0
        elif params.shape == "ring":
            expected = (r <= 1.0) & (r >= 0.55)
            assert not mask[int(cy), int(cx)]  # the hole shows the background
        elif params.shape == "crescent":
            shift = -0.45 if params.mirror else 0.45
            bx = cx + params.scale * shift * math.cos(params.angle)
            by = cy + params.scale * shift * math.sin(params.angle)
            expected = (r <= 1.0) & (np.hypot(x - bx, y - by) / params.scale > 0.8)
        else:
            continue
        assert np.array_equal(mask, expected), (index, params.shape)


def test_area_fraction_and_fully_inside(small: shapes.ShapesDataset) -> None:
    area = small.masks.float().mean(dim=(1, 2, 3))
    # Pixel rounding moves the area by well under 1% of the image at these sizes.
    assert float(area.min()) >= AREA_RANGE[0] - 0.01
    assert float(area.max()) <= AREA_RANGE[1] + 0.01
    border = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    assert not small.masks[:, 0][:, border].any()


def test_every_class_fits_the_largest_area() -> None:
    for shape in SHAPE_CLASSES:
        scale = math.sqrt(AREA_RANGE[1] * SIZE * SIZE / shapes.unit_area(shape))
        assert scale + 1.0 <= SIZE / 2, shape
        mask = shape_mask(shape, SIZE, (SIZE / 2, SIZE / 2), scale, 0.3, False)
        assert abs(mask.mean() - AREA_RANGE[1]) < 0.01, shape


def test_same_index_same_image() -> None:
    whole = generate_shapes(12, size=SIZE, seed=7, split="train")
    part = generate_shapes(4, size=SIZE, seed=7, split="train", start=8)
    again = generate_shapes(12, size=SIZE, seed=7, split="train")
    assert torch.equal(whole.images[8:], part.images)
    assert torch.equal(whole.masks[8:], part.masks)
    assert torch.equal(whole.labels[8:], part.labels)
    assert torch.equal(whole.images, again.images)


def _digests(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


def test_splits_and_seeds_do_not_overlap() -> None:
    n = 60
    train = generate_shapes(n, size=SIZE, seed=0, split="train").images
    test = generate_shapes(n, size=SIZE, seed=0, split="test").images
    train_seed1 = generate_shapes(n, size=SIZE, seed=1, split="train").images
    assert len(_digests(train)) == n and len(_digests(test)) == n
    assert not _digests(train) & _digests(test)
    assert not _digests(train) & _digests(train_seed1)
    # Not just different pixels: different placements of the same index.
    for index in range(n):
        a = sample_params(index, size=SIZE, seed=0, split="train")
        b = sample_params(index, size=SIZE, seed=0, split="test")
        assert a.centre != b.centre and a.background != b.background


def test_other_sizes() -> None:
    ds = generate_shapes(K, size=128, seed=0, split="test")
    assert ds.images.shape == (K, 3, 128, 128)
    area = ds.masks.float().mean(dim=(1, 2, 3))
    assert float(area.min()) >= AREA_RANGE[0] - 0.01 and float(area.max()) <= AREA_RANGE[1] + 0.01


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_shapes(2, split="validation")
    with pytest.raises(ValueError):
        generate_shapes(-1)
    with pytest.raises(ValueError):
        generate_shapes(2, start=-3)


# --------------------------------------------------------------------------- no leaks


def _object_colour_features(ds: shapes.ShapesDataset) -> np.ndarray:
    """Per image: mean and std of the object's pixels per channel (6 features)."""
    weight = ds.masks.double()
    area = weight.sum(dim=(2, 3))
    images = ds.images.double()
    mean = (images * weight).sum(dim=(2, 3)) / area
    var = (images**2 * weight).sum(dim=(2, 3)) / area - mean**2
    return torch.cat([mean, var.clamp(min=0).sqrt()], dim=1).numpy()


def _solidity_features(ds: shapes.ShapesDataset) -> np.ndarray:
    """Per image: object area over its bounding-box area (a *shape* feature)."""
    masks = ds.masks[:, 0]
    extents = []
    for occupied in (masks.any(dim=2), masks.any(dim=1)):  # columns, rows
        index = torch.arange(occupied.shape[1]).expand_as(occupied)
        first = torch.where(occupied, index, occupied.shape[1]).amin(dim=1)
        last = torch.where(occupied, index, -1).amax(dim=1)
        extents.append(last - first + 1)
    box = (extents[0] * extents[1]).double()
    return (masks.sum(dim=(1, 2)).double() / box)[:, None].numpy()


def _nearest_centroid_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Accuracy of a nearest-class-mean classifier on standardised features."""
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(K)])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == y_test).mean())


@pytest.fixture(scope="module")
def leak_sets() -> tuple[shapes.ShapesDataset, shapes.ShapesDataset]:
    """900 train and 900 test images (100 per class) for the leakage checks."""
    n = 100 * K
    return (
        generate_shapes(n, size=SIZE, seed=11, split="train"),
        generate_shapes(n, size=SIZE, seed=11, split="test"),
    )


def test_object_colour_does_not_predict_the_class(leak_sets) -> None:
    """A classifier on the object's colour statistics is at chance level on new data.

    Features: mean and std of the object's pixels per channel. Classifier: nearest class
    mean, fitted on the train split, scored on the test split. With labels balanced and
    features independent of the class, its accuracy is 1/K on average with binomial
    spread; we fail above 1/K + 3.5 sigma (n = 900: 0.148 for K = 9), a false-alarm
    rate of about 2e-4 (one-sided normal tail).
    """
    train, test = leak_sets
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    acc = _nearest_centroid_accuracy(
        _object_colour_features(train), y_train, _object_colour_features(test), y_test
    )
    n = len(y_test)
    bound = 1 / K + 3.5 * math.sqrt((1 / K) * (1 - 1 / K) / n)
    assert acc <= bound, (acc, bound)

    # The same check has power: a genuine shape feature (solidity) is far above chance.
    shape_acc = _nearest_centroid_accuracy(
        _solidity_features(train), y_train, _solidity_features(test), y_test
    )
    assert shape_acc > bound + 0.1, shape_acc


def test_object_area_does_not_depend_on_the_class(leak_sets) -> None:
    """Per-class mean object area: a one-way ANOVA must not reject at p < 1e-3."""
    stats = pytest.importorskip("scipy.stats")
    train, _ = leak_sets
    area = train.masks.float().mean(dim=(1, 2, 3)).numpy()
    groups = [area[train.labels.numpy() == k] for k in range(K)]
    assert stats.f_oneway(*groups).pvalue > 1e-3
