"""The ``robsig`` command: what is registered, outside of pytest."""

from __future__ import annotations

import argparse
import sys

from robsig_checks.errors import RobsigError


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def list_registered() -> str:
    """Return one line per registered model adapter, data set kind, check and bundled suite."""
    from robsig_checks.registry import default_registry

    registry = default_registry()
    lines = ["model adapters (spec PREFIX:...; anything else is ARCH:TAG for open_clip):"]
    lines += [f"  {name:28} {_first_line(factory.__doc__)}" for name, factory in sorted(registry.model_adapters.items())]
    lines.append("data set kinds:")
    lines += [f"  {name:28} {_first_line(factory.__doc__)}" for name, factory in sorted(registry.datasets.items())]
    lines.append("checks:")
    lines += [f"  {name:28} {cls.summary}" for name, cls in sorted(registry.checks.items())]
    lines.append("bundled suites:")
    lines += [f"  {name:28} {path}" for name, path in sorted(registry.suites.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robsig", description="Robustness signatures of vision models.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show registered model adapters, data set kinds, checks and bundled suites")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "list":
            print(list_registered())
    except RobsigError as error:
        print(f"robsig: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
