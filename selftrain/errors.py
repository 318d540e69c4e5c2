"""The one error type for bad user input: stages print it on one line and exit 2."""
from __future__ import annotations

import sys
from typing import Callable


class InputError(Exception):
    """Bad input from the user: a file, a line, a field, a flag or a config key.

    The message already names the location (`path:line: field: what is wrong`).
    """

    exit_code = 2


def exit_code(command: Callable[[list[str]], None], argv: list[str] | None = None) -> int:
    """Run a small command-line tool's `command` on argv (sys.argv[1:] when None): 0, or for bad input
    `error: ...` on stderr and 2, as cli.run does, for modules below selftrain.cli (config, config_doc)."""
    try:
        command(sys.argv[1:] if argv is None else argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
