"""Real photographs that ship with scikit-image, ready for a model.

``sample_images`` needs no network: the photographs are bundled inside the
scikit-image wheel.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from maskbench.errors import ImageError

#: Bundled colour photographs, in the order sample_images hands them out.
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


@functools.cache
def _photo(name: str) -> torch.Tensor:
    import skimage.data

    array = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (antialiased bilinear) so the short side is ``size``, then centre-crop.

    ``image`` is (C, H, W) in [0, 1]; the result is (C, size, size), clamped to [0, 1].
    """
    _, height, width = image.shape
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = F.interpolate(
        image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[:, top : top + size, left : left + size].clamp_(0.0, 1.0)


def sample_images(
    n: int = 4,
    size: int = 224,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` real photographs as a (n, 3, size, size) pixel-space batch.

    The first ``len(PHOTO_NAMES)`` images are the bundled photographs, resized and
    centre-cropped; beyond that the list repeats horizontally flipped, then with the
    crop taken at the top-left and bottom-right corners instead of the centre, so that
    every image in a batch differs.
    """
    if n < 1:
        raise ImageError(f"n must be >= 1, got {n}")
    if size < 8:
        raise ImageError(f"size must be >= 8 pixels, got {size}")
    variants = 4  # centre, flipped centre, top-left, bottom-right
    if n > variants * len(PHOTO_NAMES):
        raise ImageError(
            f"sample_images provides at most {variants * len(PHOTO_NAMES)} distinct images, "
            f"asked for {n}; load your own with --images DIR or repeat the batch"
        )
    out = []
    for index in range(n):
        variant, which = divmod(index, len(PHOTO_NAMES))
        photo = _photo(PHOTO_NAMES[which])
        if variant in (0, 1):
            image = resize_center_crop(photo, size)
            if variant == 1:
                image = image.flip(-1)
        else:
            _, height, width = photo.shape
            side = min(height, width) * 3 // 4
            top = 0 if variant == 2 else height - side
            left = 0 if variant == 2 else width - side
            image = resize_center_crop(photo[:, top : top + side, left : left + side], size)
        out.append(image)
    return torch.stack(out).to(device=device, dtype=dtype)
