"""The images an audit runs on: ``--images DIR`` or maskbench's bundled photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskbench.images import resize_center_crop, sample_images

#: File suffixes ``--images`` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Images in the default bank (the bundled photographs).
DEFAULT_COUNT = 4
#: At most this many files are read from ``--images DIR`` (sorted by name).
MAX_DIR_IMAGES = 32


def image_files(directory: str | Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"--images {str(directory)!r} is not a directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"--images {str(directory)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files[:MAX_DIR_IMAGES]


def load_images(directory: str | Path, size: int) -> torch.Tensor:
    """(N, 3, size, size) pixel-space images from ``directory``, resized and centre-cropped."""
    from PIL import Image

    out = []
    for path in image_files(directory):
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        out.append(resize_center_crop(tensor, size))
    return torch.stack(out)


def audit_images(directory: str | Path | None, size: int, batch_size: int) -> torch.Tensor:
    """The audit's image bank: ``directory``'s images, or the bundled photographs.

    The bank holds at least ``batch_size`` images (the bundled photographs: at least
    :data:`DEFAULT_COUNT`).
    """
    if directory is None:
        return sample_images(max(DEFAULT_COUNT, batch_size), size)
    images = load_images(directory, size)
    if images.shape[0] < batch_size:
        raise ValueError(
            f"--images {str(directory)!r} holds {images.shape[0]} images but --batch-size "
            f"is {batch_size}"
        )
    return images
