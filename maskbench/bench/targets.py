"""The speed targets of issue #6, as ratios to the plain forward of the same run."""

from __future__ import annotations

#: Case name -> (CPU target, GPU target): at most this many plain forwards.
TARGETS: dict[str, tuple[float, float]] = {
    "layer_masking": (1.5, 1.3),
    "layer_masking_zero": (1.2, 1.2),
    "layer_masking_crop": (1.2, 1.2),
    "layer_masking_crop@box112": (0.4, 0.4),
    "black": (1.05, 1.05),
    "grey": (1.05, 1.05),
    "image_mean": (1.05, 1.05),
    "noise": (1.05, 1.05),
}


def target_for(case: str, device_type: str) -> float | None:
    """The ratio a case must stay under on this device type, or None if it has none.

    A case replaying CUDA graphs (``NAME+graphs``) has the target of ``NAME``.
    """
    pair = TARGETS.get(case.removesuffix("+graphs"))
    if pair is None:
        return None
    return pair[1] if device_type == "cuda" else pair[0]
