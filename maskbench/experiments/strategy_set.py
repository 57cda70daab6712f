"""Resolving the strategies an evaluation compares, with a clear error for missing ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from maskbench.errors import MaskbenchError, UnknownStrategyError
from maskbench.strategies import Strategy, get_strategy, list_strategies

#: The strategies of the ``paper`` report, in report order.
PAPER_STRATEGIES: tuple[str, ...] = (
    "black",
    "grey",
    "blur",
    "inpaint_neighbor",
    "layer_masking",
    "layer_masking_zero",
    "partial_conv",
    "layer_masking_crop",
)

#: The strategy whose findings the paper reports, and the fills it is compared against.
PAPER_METHOD = "layer_masking"
PAPER_BASELINES: tuple[str, ...] = ("black", "grey")

StrategySpec = Sequence[str | Strategy] | Mapping[str, Strategy]


class MissingStrategiesError(MaskbenchError, LookupError):
    """Some requested strategies are not registered in this installation."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _instantiate(name: str, model: nn.Module | None) -> Strategy:
    # "grey" is the colour that normalises to 0 for *this* model (the paper's grey).
    mean_colour = getattr(model, "mean_colour", None)
    if name == "grey" and mean_colour is not None:
        return get_strategy(name, colour=mean_colour)
    return get_strategy(name)


def resolve_strategies(
    strategies: StrategySpec,
    model: nn.Module | None = None,
    *,
    explicit: bool = True,
) -> dict[str, Strategy]:
    """Name -> strategy instance for every requested strategy, in the given order.

    Names are looked up with :func:`maskbench.get_strategy` (registered names, entry
    points, ``pkg.module:attr``). All missing names are reported together in one
    :class:`MissingStrategiesError`; ``explicit=False`` (the default set of a report)
    adds a hint to pass ``--strategies`` with the available ones.
    """
    if isinstance(strategies, Mapping):
        return dict(strategies)
    resolved: dict[str, Strategy] = {}
    missing: list[str] = []
    for item in strategies:
        if isinstance(item, Strategy):
            resolved[item.name or type(item).__name__] = item
            continue
        try:
            resolved[item] = _instantiate(item, model)
        except UnknownStrategyError:
            missing.append(item)
    if missing:
        available = list_strategies()
        message = (
            f"strategies not available in this installation: {', '.join(missing)}. "
            f"Registered strategies: {', '.join(available)}."
        )
        if not explicit:
            usable = [s for s in strategies if isinstance(s, str) and s not in missing]
            message += (
                " The default strategy set needs all of them; to run without the missing "
                f"ones pass them explicitly, e.g. --strategies {','.join(usable)}"
            )
        raise MissingStrategiesError(message)
    if not resolved:
        raise ValueError("no strategies to evaluate")
    return resolved
