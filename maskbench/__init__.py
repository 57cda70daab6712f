"""maskbench: honest, measurable input masking for CNNs."""

from maskbench.errors import (
    ImageError,
    MaskbenchError,
    MaskError,
    UnknownModelError,
    UnknownStrategyError,
    UnsupportedModelError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "MaskError",
    "MaskbenchError",
    "UnknownModelError",
    "UnknownStrategyError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "__version__",
]
