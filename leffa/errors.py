"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class LeffaError(Exception):
    """A problem with the user's input (file, option, checkpoint) that a one-line message explains."""
