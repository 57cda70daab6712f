"""Run a traced graph carrying a keep-mask beside every activation.

The graph is compiled once per trace into a flat list of steps (argument templates,
module paths, which values die after each step), so a forward costs one Python loop
over the nodes: no per-pixel or per-channel Python work.

Every op whose arguments include a masked activation goes through its rule; ops on
plain values (parameters, pooled vectors) run as they are. In check mode (``ctx.problems``
is a list), refusals are recorded instead of raised and the op runs unmasked so the
pass can go on and list every unsupported op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from maskbench.engine.masks import MT, NCHW
from maskbench.engine.registry import (
    Context,
    call_plain,
    describe,
    function_rule_for,
    has_masked,
    masked_in,
    method_rule_for,
    module_rule_for,
    unwrap,
    wrap_output,
)
from maskbench.engine.tracing import TracedModel, resolve_attr, resolve_module
from maskbench.engine.variants import Variant
from maskbench.errors import UnsupportedModelError

__all__ = ["masked_logits", "run_graph"]


@dataclass(frozen=True)
class _Step:
    node: fx.Node
    op: str
    target: Any
    path: str
    free: tuple[fx.Node, ...]


def _compile(traced: TracedModel) -> list[_Step]:
    nodes = list(traced.graph.nodes)
    last_use: dict[fx.Node, int] = {}
    for i, node in enumerate(nodes):
        for used in node.all_input_nodes:
            last_use[used] = i
    dying: dict[int, list[fx.Node]] = {}
    for node, i in last_use.items():
        dying.setdefault(i, []).append(node)
    return [
        _Step(node, node.op, node.target, traced.node_path(node), tuple(dying.get(i, ())))
        for i, node in enumerate(nodes)
    ]


def _steps(traced: TracedModel) -> list[_Step]:
    steps = traced.analyses.get("steps")
    if steps is None:
        with traced.lock:
            steps = traced.analyses.get("steps")
            if steps is None:
                steps = _compile(traced)
                traced.analyses["steps"] = steps
    return steps


def run_graph(
    traced: TracedModel,
    modules: dict[str, nn.Module],
    ctx: Context,
    x: torch.Tensor,
    keep: torch.Tensor,
) -> Any:
    """Evaluate the graph on image batch ``x`` with keep-mask ``keep`` (B, 1, H, W) bool.

    The forward's masks are released when it ends, even by an exception (see
    :meth:`Context.release`).
    """
    try:
        return _evaluate(traced, modules, ctx, x, keep)
    finally:
        ctx.release()


def masked_logits(
    traced_model: TracedModel,
    modules: dict[str, nn.Module],
    variant: Variant,
    x: torch.Tensor,
    keep: torch.Tensor,
    *,
    host_reads: bool | None = None,
) -> torch.Tensor:
    """The engine's logits for a validated batch, every sample masked (no checks after).

    ``host_reads=False`` makes the forward free of host reads (capturable as a CUDA
    graph); ``None`` takes :data:`maskbench.engine.masks.HOST_SHORTCUTS`.
    """
    ctx = Context(variant=variant)
    if host_reads is not None:
        ctx.host_reads = host_reads
    out = run_graph(traced_model, modules, ctx, x, keep)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"masked_forward expects a model returning one tensor, got {type(out).__name__}"
        )
    return out


def _evaluate(
    traced: TracedModel,
    modules: dict[str, nn.Module],
    ctx: Context,
    x: torch.Tensor,
    keep: torch.Tensor,
) -> Any:
    env: dict[fx.Node, Any] = {}
    placeholders = 0
    result: Any = None
    for step in _steps(traced):
        node = step.node
        if step.op == "placeholder":
            if placeholders == 0:
                value: Any = MT(x, ctx.new_mask(keep), NCHW)
            elif node.args:
                value = node.args[0]  # the forward's default value
            else:
                raise UnsupportedModelError(
                    f"the model's forward needs a second input ({node.target!r}); the "
                    "masking engine feeds only the image batch"
                )
            placeholders += 1
        elif step.op == "get_attr":
            value = resolve_attr(traced, modules, str(step.target))
        elif step.op == "output":
            result = fx.node.map_arg(node.args[0], env.__getitem__)
            break
        else:
            value = _run_node(ctx, step, modules, env)
        env[node] = value
        for dead in step.free:
            env.pop(dead, None)
    if has_masked(result):
        message = (
            "the model's output still carries a spatial mask (it does not pool over space "
            "before its head); no masking rule for spatial outputs"
        )
        if ctx.problems is None:
            raise UnsupportedModelError(f"<output>: {message}")
        ctx.problems.append(("<output>", "output", message))
        result = unwrap(result)
    return result


def _run_node(ctx: Context, step: _Step, modules: dict[str, nn.Module], env: dict) -> Any:
    node = step.node
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if step.op == "call_module":
        target: Any = resolve_module(modules, str(step.target))
    else:
        target = step.target
    if not has_masked((args, kwargs)):
        return call_plain(target, args, kwargs)
    ctx.path = step.path
    ctx.op = describe(target)
    if step.op == "call_module":
        rule = module_rule_for(target)
    elif step.op == "call_function":
        rule = function_rule_for(target)
    else:
        rule = method_rule_for(str(target))
    try:
        if rule is None:
            raise ctx.refuse("has no masking rule")
        return rule(ctx, target, args, kwargs)
    except UnsupportedModelError as error:
        if ctx.problems is None:
            raise
        ctx.problems.append((step.path, ctx.op, str(error)))
        return _continue_unmasked(ctx, target, args, kwargs)


def _continue_unmasked(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """Check mode: run a refused op plainly and guess its output mask, to go on."""
    out = call_plain(target, unwrap(args), unwrap(kwargs))
    first = masked_in((args, kwargs))[0]
    try:
        return wrap_output(ctx, out, first.mask, first.layout)
    except UnsupportedModelError:
        return out
