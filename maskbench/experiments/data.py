"""Evaluation data: images, their object masks and (optional) labels.

Two sources:

* :func:`load_benchmark`: maskbench's offline shapes benchmark (exact object masks,
  labels, class names);
* :func:`load_folder`: a user's own images. Layout::

      images/                 --images DIR
        cat_01.jpg            any of .png .jpg .jpeg .bmp .tif .tiff .webp
        dog_07.png
        labels.csv            optional: "image,label" rows (see below)
      masks/                  --masks DIR (optional)
        cat_01.png            same stem as the image; nonzero pixels = object
        dog_07.png
      saliency/               --saliency DIR (optional)
        cat_01.npy            same stem; (H, W) float array, larger = more salient

  ``labels.csv`` has a header row ``image,label``; ``image`` is the file name or stem,
  ``label`` a class index or a class name (resolved against the model's class names).
  Images are sorted by file name. They are resized (short side) and centre-cropped to
  ``size``; masks and saliency maps get the same geometry (masks by nearest neighbour).

Object masks follow the *object* convention (True = object pixel). Keep-masks handed to
strategies follow the maskbench convention (True = kept); the evaluations convert.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskbench.errors import ImageError, MaskbenchError

#: File name endings read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(MaskbenchError, ValueError):
    """Evaluation data is missing, inconsistent or unreadable."""


@dataclass
class EvalData:
    """Images to evaluate on, with what is known about them.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1].
        objects: (N, 1, H, W) bool, True on the object, or None when unknown.
        labels: (N,) int64 class indices, or None when unknown.
        classes: class names (index = label), or None.
        names: one identifier per image (file stem or benchmark index).
        source: a one-line description of where the data came from.
        saliency: (N, 1, H, W) float saliency maps, or None.
        backgrounds: (N, 3, H, W) images without their object (benchmark only), or None.
    """

    images: torch.Tensor
    objects: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None
    names: list[str] = field(default_factory=list)
    source: str = ""
    saliency: torch.Tensor | None = None
    backgrounds: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(f"images must be (N, 3, H, W), got {tuple(self.images.shape)}")
        if not self.names:
            self.names = [str(i) for i in range(n)]
        size = tuple(self.images.shape[-2:])
        for name in ("objects", "saliency", "backgrounds"):
            tensor = getattr(self, name)
            if tensor is not None and (tensor.shape[0] != n or tuple(tensor.shape[-2:]) != size):
                raise DataError(
                    f"{name} have shape {tuple(tensor.shape)}, images {tuple(self.images.shape)}"
                )
        if self.objects is not None and self.objects.dtype != torch.bool:
            raise DataError(f"object masks must be bool, got {self.objects.dtype}")
        if self.labels is not None and self.labels.shape != (n,):
            raise DataError(f"labels have shape {tuple(self.labels.shape)}, expected ({n},)")
        if len(self.names) != n:
            raise DataError(f"{len(self.names)} names for {n} images")

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def has_labels(self) -> bool:
        """Whether labels are known."""
        return self.labels is not None

    def head(self, n: int | None) -> EvalData:
        """The first ``n`` images (all of them when ``n`` is None or larger)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise DataError(f"need at least one image, asked for {n}")

        def cut(t):
            return None if t is None else t[:n]

        return replace(
            self,
            images=self.images[:n],
            objects=cut(self.objects),
            labels=cut(self.labels),
            names=self.names[:n],
            saliency=cut(self.saliency),
            backgrounds=cut(self.backgrounds),
        )

    def select(self, index: torch.Tensor) -> EvalData:
        """The images at ``index`` (bool or integer tensor), in that order."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        idx = index.tolist()

        def pick(t):
            return None if t is None else t[index]

        return replace(
            self,
            images=self.images[index],
            objects=pick(self.objects),
            labels=pick(self.labels),
            names=[self.names[i] for i in idx],
            saliency=pick(self.saliency),
            backgrounds=pick(self.backgrounds),
        )

    def to(self, device: torch.device | str) -> EvalData:
        """A copy with every tensor on ``device``."""

        def move(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            images=self.images.to(device),
            objects=move(self.objects),
            labels=move(self.labels),
            saliency=move(self.saliency),
            backgrounds=move(self.backgrounds),
        )

    def describe(self) -> dict:
        """Facts for a report: source, count, size, what is known."""
        return {
            "source": self.source,
            "n_images": len(self),
            "size": list(self.size),
            "labels": self.has_labels,
            "object_masks": self.objects is not None,
            "saliency": self.saliency is not None,
            "classes": list(self.classes) if self.classes else None,
        }


# --------------------------------------------------------------------------- benchmark


def load_benchmark(
    n: int, *, size: int = 96, seed: int = 0, split: str = "test", start: int = 0
) -> EvalData:
    """``n`` images of maskbench's shapes benchmark, with exact object masks and labels."""
    try:
        from maskbench.benchmark.shapes import generate_shapes
    except ImportError as exc:  # pragma: no cover - the benchmark ships with maskbench
        raise DataError(
            f"the shapes benchmark (maskbench.benchmark.shapes) is not available: {exc}"
        ) from exc
    ds = generate_shapes(n, size=size, seed=seed, split=split, start=start)
    return EvalData(
        images=ds.images,
        objects=ds.masks.bool(),
        labels=ds.labels.long(),
        classes=tuple(ds.classes),
        names=[f"{split}-{int(i)}" for i in ds.indices],
        source=f"maskbench shapes benchmark, split={split}, seed={seed}, size={size}",
        backgrounds=getattr(ds, "backgrounds", None),
    )


# --------------------------------------------------------------------------- folders


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def _read_rgb(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _read_mask(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except Exception as exc:
        raise DataError(f"cannot read mask {path}: {type(exc).__name__}: {exc}") from exc
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1) if array.shape[-1] >= 3 else array[..., 0]
    return torch.from_numpy(np.ascontiguousarray(array != 0))[None]


def _find_same_stem(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.exists():
                return candidate
    return None


def _crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left) of resize-short-side-then-centre-crop."""
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    return new_h, new_w, (new_h - size) // 2, (new_w - size) // 2


def _fit(tensor: torch.Tensor, size: int | None, mode: str) -> torch.Tensor:
    """Resize the short side of a (C, H, W) tensor to ``size`` and centre-crop it."""
    if size is None:
        return tensor
    _, height, width = tensor.shape
    new_h, new_w, top, left = _crop_box(height, width, size)
    if (new_h, new_w) != (height, width):
        source = tensor[None].float()
        if mode == "nearest":
            tensor = F.interpolate(source, size=(new_h, new_w), mode="nearest-exact")[0]
        else:
            tensor = F.interpolate(
                source, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
            )[0]
    return tensor[:, top : top + size, left : left + size]


def read_labels(path: Path, stems: Sequence[str], classes: Sequence[str] | None) -> torch.Tensor:
    """Labels for ``stems`` from a CSV with an ``image,label`` header.

    ``label`` is an integer class index or a class name found in ``classes``.
    """
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DataError(f"cannot read labels file {path}: {exc}") from exc
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise DataError(f"{path} needs a header row 'image,label' and one row per image")
    by_stem = {Path(row["image"].strip()).stem: row["label"].strip() for row in rows}
    lookup = {name: i for i, name in enumerate(classes or ())}
    labels, missing = [], []
    for stem in stems:
        if stem not in by_stem:
            missing.append(stem)
            continue
        text = by_stem[stem]
        if text.lstrip("-").isdigit():
            labels.append(int(text))
        elif text in lookup:
            labels.append(lookup[text])
        else:
            known = "the model has no class names" if not lookup else "not a class name"
            raise DataError(f"{path}: label {text!r} of {stem!r} is not an integer ({known})")
    if missing:
        raise DataError(
            f"{path} has no label for {len(missing)} image(s), e.g. {', '.join(missing[:5])}"
        )
    return torch.tensor(labels, dtype=torch.int64)


def load_folder(
    images: str | Path,
    masks: str | Path | None = None,
    *,
    labels: str | Path | None = None,
    saliency: str | Path | None = None,
    size: int | None = None,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
) -> EvalData:
    """Images (and object masks, labels, saliency maps) from folders; layout in the module doc.

    Args:
        images: folder of images.
        masks: folder of same-stem masks (nonzero = object), or None.
        labels: CSV of labels; defaults to ``images/labels.csv`` when that exists.
        saliency: folder of same-stem ``.npy`` saliency maps, or None.
        size: side of the square the images are resized and centre-cropped to; None
            keeps them as they are (then they must all have the same size).
        classes: class names used to resolve names in ``labels.csv``.
        limit: read only the first ``limit`` images (sorted by name).
    """
    folder = Path(images)
    files = _image_files(folder)[:limit] if limit else _image_files(folder)
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise DataError(f"{folder} has several images with the same stem; stems must be unique")
    tensors = [_fit(_read_rgb(p), size, "bilinear").clamp(0, 1) for p in files]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise DataError(
            f"images in {folder} have different sizes ({sorted(shapes)[:3]} ...); pass a size "
            "(--size) to resize and centre-crop them"
        )
    batch = torch.stack(tensors)

    object_masks = None
    if masks is not None:
        mask_folder = Path(masks)
        if not mask_folder.is_dir():
            raise DataError(f"mask folder not found: {mask_folder}")
        found, missing = [], []
        for stem in stems:
            path = _find_same_stem(mask_folder, stem, IMAGE_SUFFIXES)
            if path is None:
                missing.append(stem)
            else:
                found.append(path)
        if missing:
            raise DataError(
                f"{mask_folder} has no mask for {len(missing)} image(s), e.g. "
                f"{', '.join(missing[:5])}; masks need the image's stem (cat_01.jpg -> cat_01.png)"
            )
        fitted = []
        for stem, path, image in zip(stems, found, tensors, strict=True):
            mask = _fit(_read_mask(path).float(), size, "nearest") > 0.5
            if tuple(mask.shape[-2:]) != tuple(image.shape[-2:]):
                raise DataError(
                    f"mask {path.name} is {tuple(mask.shape[-2:])} but image {stem} is "
                    f"{tuple(image.shape[-2:])}; masks must have their image's size"
                )
            fitted.append(mask)
        object_masks = torch.stack(fitted)

    saliency_maps = None
    if saliency is not None:
        saliency_folder = Path(saliency)
        maps = []
        for stem in stems:
            path = _find_same_stem(saliency_folder, stem, (".npy",))
            if path is None:
                raise DataError(f"{saliency_folder} has no saliency map {stem}.npy")
            array = np.load(path)
            if array.ndim != 2:
                raise DataError(f"saliency map {path} must be 2-d (H, W), got {array.shape}")
            maps.append(_fit(torch.from_numpy(array.astype(np.float32))[None], size, "bilinear"))
        saliency_maps = torch.stack(maps)

    label_path = Path(labels) if labels is not None else folder / "labels.csv"
    label_tensor = None
    if labels is not None or label_path.exists():
        label_tensor = read_labels(label_path, stems, classes)
    if batch.shape[0] == 0:
        raise ImageError(f"no images read from {folder}")
    return EvalData(
        images=batch,
        objects=object_masks,
        labels=label_tensor,
        classes=tuple(classes) if classes else None,
        names=stems,
        source=f"folder {folder}" + (f" (masks: {masks})" if masks is not None else ""),
        saliency=saliency_maps,
    )
