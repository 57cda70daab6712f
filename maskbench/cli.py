"""The ``maskbench`` command line: one entry point, one module per subcommand.

Subcommands live beside what they run and expose ``add_parser(subparsers)`` (which
registers the subcommand and sets ``func`` on its parser). They are imported only
when the command line is built, so ``import maskbench`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that each contribute one subcommand.
SUBCOMMAND_MODULES = (
    "maskbench.experiments.cli",  # maskbench run ...
    "maskbench.bench.cli",  # maskbench bench ...
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="maskbench",
        description="Honest, measurable input masking for CNNs.",
    )
    from maskbench import __version__

    parser.add_argument("--version", action="version", version=f"maskbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that subcommand is not part of this installation
            raise
        module.add_parser(subparsers)
    sub = subparsers.add_parser("strategies", help="list the registered masking strategies")
    sub.set_defaults(func=_list_strategies)
    return parser


def _list_strategies(args: argparse.Namespace) -> int:
    import maskbench as mb

    for name in mb.list_strategies():
        claims = ", ".join(sorted(c.value for c in mb.get_strategy(name).claims))
        print(f"{name:22s} {claims}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
