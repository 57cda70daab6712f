"""maskbench: honest, measurable input masking for CNNs.

Quick start::

    import maskbench as mb
    model = mb.load_model("resnet50", weights="auto")
    images = mb.sample_images(4, 224)
    mask = mb.rectangle_masks((224, 224), [(32, 32, 128, 128)])
    logits = mb.get_strategy("layer_masking")(model, images, mask)

Conventions: images are (B, 3, H, W) floats in pixel space [0, 1]; masks are
(B, 1, H, W) with True/1 = kept (visible) and False/0 = removed.
"""

from maskbench.engine import (
    Variant,
    check_model,
    crop_applicability,
    masked_forward,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)
from maskbench.errors import (
    CaptureError,
    DeviceError,
    ImageError,
    MaskbenchError,
    MaskError,
    NumericalRangeError,
    UnknownModelError,
    UnknownStrategyError,
    UnsupportedModelError,
    WeightsUnavailableError,
)
from maskbench.images import sample_images
from maskbench.masks import (
    check_images,
    check_mask,
    masks_from_keep,
    nested_removal_masks,
    patch_grid,
    quickshift,
    random_removal_masks,
    rectangle_masks,
    slic,
)
from maskbench.models import NormalizedModel, load_model, shipped_models, wrap_model
from maskbench.strategies import (
    ALL_CLAIMS,
    Claim,
    InputSpaceStrategy,
    ModelMismatchError,
    Strategy,
    get_strategy,
    list_strategies,
    register_strategy,
)

__version__ = "0.1.0"

__all__ = [
    "ALL_CLAIMS",
    "CaptureError",
    "Claim",
    "DeviceError",
    "ImageError",
    "InputSpaceStrategy",
    "MaskError",
    "MaskbenchError",
    "ModelMismatchError",
    "NormalizedModel",
    "NumericalRangeError",
    "Strategy",
    "UnknownModelError",
    "UnknownStrategyError",
    "UnsupportedModelError",
    "Variant",
    "WeightsUnavailableError",
    "__version__",
    "check_images",
    "check_mask",
    "check_model",
    "crop_applicability",
    "get_strategy",
    "list_strategies",
    "load_model",
    "masked_forward",
    "masks_from_keep",
    "nested_removal_masks",
    "patch_grid",
    "quickshift",
    "random_removal_masks",
    "rectangle_masks",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
    "register_strategy",
    "sample_images",
    "shipped_models",
    "slic",
    "wrap_model",
]
