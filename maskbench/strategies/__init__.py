"""Masking strategies: the interface, the registry and the built-in strategies."""

from maskbench.strategies.base import InputSpaceStrategy, ModelMismatchError, Strategy
from maskbench.strategies.claims import ALL_CLAIMS, Claim
from maskbench.strategies.registry import (
    ENTRY_POINT_GROUP,
    get_strategy,
    list_strategies,
    register_strategy,
    unregister_strategy,
)

__all__ = [
    "ALL_CLAIMS",
    "ENTRY_POINT_GROUP",
    "Claim",
    "InputSpaceStrategy",
    "ModelMismatchError",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "unregister_strategy",
]
