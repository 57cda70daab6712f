"""Segment maps: regular patch grids and superpixels (SLIC, quickshift).

A segment map is an (H, W) int64 tensor of ids ``0 .. S-1``; turn it into masks with
:func:`maskbench.masks.masks_from_keep`.
"""

from __future__ import annotations

import numpy as np
import torch

from maskbench.errors import ImageError


def patch_grid(
    size: tuple[int, int], patch: int = 16, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Segment map of a regular grid of ``patch`` x ``patch`` squares, row-major ids.

    Patches at the right and bottom edge are cut short when the size is not a multiple.
    """
    if patch < 1:
        raise ValueError(f"patch size must be >= 1, got {patch}")
    height, width = size
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    per_row = -(-width // patch)
    return rows[:, None] * per_row + cols[None, :]


def _image_to_numpy(image: torch.Tensor) -> np.ndarray:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ImageError(f"segment one image at a time, shape (C, H, W); got {tuple(image.shape)}")
    return image.detach().float().permute(1, 2, 0).cpu().numpy()


def _relabel(labels: np.ndarray, device) -> torch.Tensor:
    _, dense = np.unique(labels, return_inverse=True)
    return torch.as_tensor(dense.reshape(labels.shape), dtype=torch.int64, device=device)


def slic(
    image: torch.Tensor, n_segments: int = 50, *, compactness: float = 10.0, sigma: float = 1.0
) -> torch.Tensor:
    """SLIC superpixels of one (C, H, W) pixel-space image (scikit-image), on its device."""
    from skimage.segmentation import slic as skimage_slic

    array = _image_to_numpy(image)
    labels = skimage_slic(
        array,
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=0,
        channel_axis=-1 if array.shape[-1] > 1 else None,
    )
    return _relabel(labels, image.device)


def quickshift(
    image: torch.Tensor,
    *,
    kernel_size: float = 4.0,
    max_dist: float = 200.0,
    ratio: float = 0.2,
    seed: int = 0,
) -> torch.Tensor:
    """Quickshift superpixels of one (3, H, W) pixel-space image (scikit-image).

    The defaults are LIME's (kernel_size=4, max_dist=200, ratio=0.2), as in the paper.
    """
    from skimage.segmentation import quickshift as skimage_quickshift

    array = _image_to_numpy(image).astype(np.float64)
    if array.shape[-1] != 3:
        raise ImageError(f"quickshift needs a 3-channel image, got {array.shape[-1]} channels")
    labels = skimage_quickshift(
        array, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=seed
    )
    return _relabel(labels, image.device)
