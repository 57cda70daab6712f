"""Imports every built-in strategy module so that each registers itself."""

from maskbench.strategies import blur, constant, inpaint, layer_masking, noise, road  # noqa: F401
