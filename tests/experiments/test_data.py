"""Images, masks and labels from a folder; the benchmark loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskbench.experiments.data import DataError, load_benchmark, load_folder


def _write_folder(root, sizes=((40, 60), (40, 60), (40, 60))):
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[10:20, 10 + i : 30 + i] = 255
        Image.fromarray(mask).save(masks / f"im{i}.png")
    return images, masks


def test_folder_with_masks_and_labels(tmp_path):
    images, masks = _write_folder(tmp_path)
    (images / "labels.csv").write_text("image,label\nim0.png,2\nim1,cat\nim2.png,0\n")
    data = load_folder(images, masks, classes=["dog", "bird", "cat"])
    assert data.images.shape == (3, 3, 40, 60)
    assert data.labels.tolist() == [2, 2, 0]
    assert data.names == ["im0", "im1", "im2"]
    assert data.objects.dtype == torch.bool
    assert int(data.objects[0].sum()) == 10 * 20
    assert data.images.min() >= 0 and data.images.max() <= 1


def test_resizing_keeps_masks_aligned(tmp_path):
    images, masks = _write_folder(tmp_path, sizes=((40, 60), (80, 50), (32, 32)))
    with pytest.raises(DataError, match="different sizes"):
        load_folder(images, masks)
    data = load_folder(images, masks, size=32)
    assert data.images.shape == (3, 3, 32, 32) and data.objects.shape == (3, 1, 32, 32)
    assert data.labels is None


def test_missing_mask_and_bad_labels(tmp_path):
    images, masks = _write_folder(tmp_path)
    (masks / "im1.png").unlink()
    with pytest.raises(DataError, match="no mask for 1 image"):
        load_folder(images, masks)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        load_folder(empty)
    bad = tmp_path / "labels.csv"
    bad.write_text("image,label\nim0,giraffe\n")
    with pytest.raises(DataError, match="giraffe"):
        load_folder(images, labels=bad)


def test_benchmark_loader():
    data = load_benchmark(3, size=32)
    assert data.images.shape == (3, 3, 32, 32)
    assert data.labels.tolist() == [0, 1, 2]
    assert data.objects.any() and len(data.classes) == 9
    assert data.head(2).names == data.names[:2]
