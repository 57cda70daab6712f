"""Masking rules, one module per family; importing this package registers them all."""

from maskbench.engine.rules import conv, pointwise, pool, reduce, shape, timm_modules

__all__ = ["conv", "pointwise", "pool", "reduce", "shape", "timm_modules"]
