"""The layer-masking engine: run an unmodified CNN with a keep-mask beside its activations.

    from maskbench.engine import Variant, masked_forward, check_model, crop_applicability
    logits = masked_forward(network, x, keep, variant=Variant.PAPER)
    report = check_model(network)              # .ok, .unsupported, .raise_if_unsupported()
    ok, reason, total_stride = crop_applicability(network)

The model is traced once with torch.fx (timm's no-trace registries as leaves) and its
graph is evaluated with a (value, mask) pair per activation; every op that mixes spatial
positions has a rule per :class:`Variant`, position-wise ops are whitelisted, anything
else is refused with :class:`maskbench.errors.UnsupportedModelError`.
"""

import maskbench.engine.rules  # noqa: F401  (registers every rule)
from maskbench.engine.check import (
    CropApplicability,
    ModelReport,
    UnsupportedOp,
    check_model,
    crop_applicability,
)
from maskbench.engine.forward import masked_forward
from maskbench.engine.registry import (
    register_function_rule,
    register_method_rule,
    register_module_rule,
)
from maskbench.engine.variants import Variant

__all__ = [
    "CropApplicability",
    "ModelReport",
    "UnsupportedOp",
    "Variant",
    "check_model",
    "crop_applicability",
    "masked_forward",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
]
