"""The one exception type users see for bad input; the CLI prints it as one line, exit code 2."""


class CrlDistillError(Exception):
    """A problem with the user's input (path, env name, shape, file contents) stated in one line."""
