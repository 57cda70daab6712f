"""The mask and image contract: validate, never coerce.

Conventions (shared by every part of maskbench):

* images are float tensors in pixel space ``[0, 1]``, shape ``(B, C, H, W)``;
* keep-masks have shape ``(B, 1, H, W)``, ``(1, 1, H, W)`` or ``(H, W)``, dtype bool or
  a numeric dtype holding only 0 and 1; **True / 1 = kept (visible), False / 0 =
  removed**.

Anything else raises :class:`~maskbench.errors.MaskError` or
:class:`~maskbench.errors.ImageError` with a message that says what was wrong.
"""

from __future__ import annotations

import math

import torch

from maskbench.errors import ImageError, MaskError

#: How far outside [0, 1] a pixel may stray (resampling overshoot) before we refuse.
PIXEL_RANGE_SLACK = 1e-3


def check_image_layout(images: torch.Tensor, *, name: str = "images") -> torch.Tensor:
    """Check that ``images`` is a non-empty float (B, C, H, W) tensor, values unread.

    Returns the tensor unchanged. Raises :class:`ImageError` naming the problem.
    :func:`check_images` adds the value checks (finite, in [0, 1]).
    """
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ImageError(
            f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}; "
            "add a batch dimension with images.unsqueeze(0) for a single image"
        )
    if not images.is_floating_point():
        raise ImageError(
            f"{name} must be a float tensor, got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 255"
        )
    if images.shape[0] == 0:
        raise ImageError(f"{name} is an empty batch (B = 0)")
    return images


def check_images(images: torch.Tensor, *, name: str = "images") -> torch.Tensor:
    """Check that ``images`` is a finite float (B, C, H, W) batch in pixel space [0, 1].

    Returns the tensor unchanged. Raises :class:`ImageError` naming the problem.
    """
    check_image_layout(images, name=name)
    # One pass and one host sync: min and max propagate NaN, and Inf shows in them.
    low, high = torch.stack(torch.aminmax(images)).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(images)).sum())
        raise ImageError(f"{name} contain {bad} NaN or Inf values")
    if low < -PIXEL_RANGE_SLACK or high > 1 + PIXEL_RANGE_SLACK:
        if low < -PIXEL_RANGE_SLACK:
            hint = "did you pass normalised images? maskbench models normalise internally"
        elif high > 2:
            hint = "did you pass 0-255 images? divide by 255"
        else:
            hint = "clamp resampling overshoot with images.clamp(0, 1)"
        raise ImageError(
            f"{name} must be in pixel space [0, 1], got values in [{low:.4g}, {high:.4g}]; {hint}"
        )
    return images


def check_mask(
    mask: torch.Tensor,
    *,
    size: tuple[int, int],
    device: torch.device | None = None,
    batch: int | None = None,
) -> torch.Tensor:
    """Validate a keep-mask and return it as a (B or 1, 1, H, W) bool tensor.

    ``size`` is the required spatial size (H, W). When ``device`` is given the mask must
    already live there (moving it silently would hide a bug). When ``batch`` is given,
    the mask batch must be 1 or ``batch``. (H, W) masks become (1, 1, H, W).
    """
    if not isinstance(mask, torch.Tensor):
        raise MaskError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() != 4:
        raise MaskError(
            f"mask must have shape (B, 1, H, W), (1, 1, H, W) or (H, W), "
            f"got rank {mask.dim()} shape {tuple(mask.shape)}"
        )
    if mask.shape[1] != 1:
        raise MaskError(
            f"mask must have one channel, shape (B, 1, H, W), got {tuple(mask.shape)}; "
            "one mask is shared by all colour channels"
        )
    if tuple(mask.shape[-2:]) != tuple(size):
        raise MaskError(
            f"mask spatial size {tuple(mask.shape[-2:])} does not match the images' {tuple(size)}"
        )
    if batch is not None and mask.shape[0] not in (1, batch):
        raise MaskError(
            f"mask batch {mask.shape[0]} does not match the image batch {batch} "
            "(it must be equal, or 1 to share one mask)"
        )
    if mask.shape[0] == 0:
        raise MaskError("mask is an empty batch (B = 0)")
    if device is not None and mask.device != torch.device(device):
        raise MaskError(
            f"mask is on {mask.device} but the images are on {device}; "
            "move it with mask.to(images.device)"
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise MaskError(f"mask dtype {mask.dtype} is not supported; use bool or 0/1 values")
    if mask.is_floating_point():
        nan = torch.isnan(mask)
        if bool(nan.any()):
            raise MaskError(f"mask contains {int(nan.sum())} NaN values")
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary]
        raise MaskError(
            f"mask values must be 0 or 1 (1 = kept, 0 = removed), found {bad.numel()} other "
            f"values, e.g. {bad.flatten()[:3].tolist()}; threshold soft masks yourself"
        )
    return mask != 0


def broadcast_batch(images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate both and give them a common batch size.

    One image with many masks (LIME, removal curves) or many images with one mask are
    both allowed; otherwise the batch sizes must be equal. Images are expanded as a
    view, so sharing one image costs no memory.
    """
    check_images(images)
    b_img = images.shape[0]
    keep = check_mask(mask, size=tuple(images.shape[-2:]), device=images.device)
    b_mask = keep.shape[0]
    if b_img != b_mask and 1 not in (b_img, b_mask):
        raise MaskError(
            f"mask batch {b_mask} does not match the image batch {b_img} "
            "(they must be equal, or one of them 1)"
        )
    batch = max(b_img, b_mask)
    if b_img != batch:
        images = images.expand(batch, -1, -1, -1)
    if b_mask != batch:
        keep = keep.expand(batch, -1, -1, -1)
    return images, keep
