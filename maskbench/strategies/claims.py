"""The invariants a masking strategy may promise (see shared/DESIGN.md)."""

from __future__ import annotations

from enum import Enum


class Claim(str, Enum):
    """An invariant a strategy promises; the audit tests each claim a strategy makes.

    Members compare equal to their string value, so ``"identity" in strategy.claims``
    works.
    """

    IDENTITY = "identity"
    """An all-kept mask gives exactly the unmasked logits."""
    CONTENT_INDEPENDENCE = "content_independence"
    """Logits do not depend on pixel values under removed positions."""
    BATCH_CONSISTENCY = "batch_consistency"
    """A batch gives the same logits as its samples one by one, in any order."""
    DETERMINISM = "determinism"
    """Same inputs and seed, same logits."""
    CROP_EQUIVALENCE = "crop_equivalence"
    """For a stride-aligned rectangle, logits equal the model run on the crop."""
    TRANSLATION_INVARIANCE = "translation_invariance"
    """Moving the visible content and its mask by a stride-aligned offset keeps logits."""
    MONOTONE_DRIFT = "monotone_drift"
    """Over nested masks, drift from the unmasked logits does not decrease beyond tolerance."""
    FINITE = "finite"
    """No NaN/Inf, also for masks with nothing or almost nothing kept."""

    def __str__(self) -> str:
        return self.value


ALL_CLAIMS: tuple[Claim, ...] = tuple(Claim)

#: What a strategy promises when its output ignores the removed pixels, is computed per
#: sample and is deterministic and finite: most built-ins (constant fills, noise,
#: inpainting, the layer-masking variants; crop-exact adds its own two).
CONTENT_INDEPENDENT_CLAIMS: frozenset[Claim] = frozenset(
    {
        Claim.IDENTITY,
        Claim.CONTENT_INDEPENDENCE,
        Claim.BATCH_CONSISTENCY,
        Claim.DETERMINISM,
        Claim.FINITE,
    }
)


def as_claims(values) -> frozenset[Claim]:
    """Convert names or Claim members to a frozenset of Claim, rejecting unknown names."""
    out = set()
    for value in values:
        try:
            out.add(Claim(value))
        except ValueError:
            known = ", ".join(c.value for c in Claim)
            raise ValueError(f"unknown claim {value!r}; known claims: {known}") from None
    return frozenset(out)
