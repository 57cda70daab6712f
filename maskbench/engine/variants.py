"""The four masking variants the engine implements (shared/PAPER.md states their rules)."""

from __future__ import annotations

from enum import Enum


class Variant(str, Enum):
    """How removed positions are treated inside the network.

    The value of each member is the strategy name maskbench publishes for it.

    * ``PAPER``: the published "layer masking" rules. Neighbour padding (onion-peel
      inpainting) at the input of every k x k convolution, masks grow by dilation
      (``max_pool`` of the mask with the op's window), residual adds intersect masks,
      global pooling and squeeze-excite average over visible positions only.
    * ``ZERO``: the paper's "masking only" ablation: as ``PAPER`` with zero fill.
    * ``PARTIAL_CONV``: the paper's partial-convolution ablation: every k x k
      convolution sees zero-filled input, its output (before bias) is rescaled by
      window size / visible count in the window (0 where nothing is visible), then the
      bias is added. "Window size" counts in-image positions only: the image border
      stays ordinary zero padding, as in every other variant, so a mask with little
      removed behaves almost like the plain model. Other spatial ops as ``ZERO``.
    * ``CROP``: the crop-exact variant: zero fill (``-inf`` for max pooling) at the input
      of every spatial op, masks propagated by stride subsampling. For a rectangle
      aligned to the model's total stride the logits equal the model run on the crop.
    """

    PAPER = "layer_masking"
    ZERO = "layer_masking_zero"
    PARTIAL_CONV = "partial_conv"
    CROP = "layer_masking_crop"

    @property
    def dilates(self) -> bool:
        """Whether masks grow by dilation (every variant except ``CROP``)."""
        return self is not Variant.CROP

    def __str__(self) -> str:
        return self.value


def as_variant(variant: Variant | str) -> Variant:
    """Accept a :class:`Variant` or its name / value (``"PAPER"`` or ``"layer_masking"``)."""
    if isinstance(variant, Variant):
        return variant
    text = str(variant)
    for member in Variant:
        if text in (member.value, member.name, member.name.lower()):
            return member
    choices = ", ".join(m.value for m in Variant)
    raise ValueError(f"unknown masking variant {variant!r}; choose one of {choices}")
