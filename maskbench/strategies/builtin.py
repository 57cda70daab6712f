"""Imports every built-in strategy module so that each registers itself."""

from maskbench.strategies import blur, constant, inpaint, noise, road  # noqa: F401
