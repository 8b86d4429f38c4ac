"""The one exception type users see for bad input; the CLI prints it as one line, exit code 2."""

from collections.abc import Collection


class CrlDistillError(Exception):
    """A problem with the user's input (path, env name, shape, file contents) stated in one line."""


def require_choice(what: str, value: object, choices: Collection[object]) -> None:
    """Raise `CrlDistillError("<what> must be one of <choices>, got <value>")` if value is not in choices."""
    if value not in choices:
        raise CrlDistillError(f"{what} must be one of {choices}, got {value!r}")
