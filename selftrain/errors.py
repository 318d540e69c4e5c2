"""The one error type for bad user input: stages print it on one line and exit 2."""


class InputError(Exception):
    """Bad input from the user: a file, a line, a field, a flag or a config key.

    The message already names the location (`path:line: field: what is wrong`).
    """

    exit_code = 2
