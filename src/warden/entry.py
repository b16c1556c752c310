"""The ``warden`` program. ``warden serve`` goes straight to the serving process
(``warden.server``): loading the CLI first (typer, rich, httpx, every command
module) and then replacing it cost a start ~0.3 CPU-s it did not need. Every other
command, and ``serve`` with anything these options do not parse (``--help``, a bad
value), is the CLI's (``warden.cli``), which answers as it always has."""

from __future__ import annotations

import argparse
import os
import sys

# The options of ``warden serve`` (cli/server.py's ``serve``; a test holds the two equal),
# each the environment variable it sets.
SERVE_OPTIONS = {"--host": ("WARDEN_HOST", str), "--port": ("WARDEN_PORT", int),
                 "--workers": ("WARDEN_WORKERS", int)}


def serve_environment(args: list[str]) -> dict[str, str] | None:
    """The environment ``warden serve ARGS`` sets, or None when the CLI should answer."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for option, (_, kind) in SERVE_OPTIONS.items():
        parser.add_argument(option, type=kind)
    try:
        parsed, rest = parser.parse_known_args(args)
    except argparse.ArgumentError:
        return None
    if rest:
        return None
    values = vars(parsed)
    return {name: str(values[option[2:]]) for option, (name, _) in SERVE_OPTIONS.items()
            if values[option[2:]] is not None}


def main() -> None:
    env = serve_environment(sys.argv[2:]) if sys.argv[1:2] == ["serve"] else None
    if env is None:
        from warden.cli import main as cli

        cli()
        return
    os.environ.update(env)
    from warden.server import main as serve

    serve()
