"""Keep-masks: the contract (validation) and builders (rectangles, segments, removals)."""

from maskbench.masks.builders import (
    count_segments,
    masks_from_keep,
    nested_keep_vectors,
    nested_removal_masks,
    random_order,
    random_removal_masks,
    rectangle_masks,
    removed_count,
)
from maskbench.masks.segments import patch_grid, quickshift, slic
from maskbench.masks.validate import broadcast_batch, check_images, check_mask

__all__ = [
    "broadcast_batch",
    "check_images",
    "check_mask",
    "count_segments",
    "masks_from_keep",
    "nested_keep_vectors",
    "nested_removal_masks",
    "patch_grid",
    "quickshift",
    "random_order",
    "random_removal_masks",
    "rectangle_masks",
    "removed_count",
    "slic",
]
