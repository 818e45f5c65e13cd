"""The one exception a user can cause; the CLI shows its message as one red line and exits with code 2."""


class ResreproError(ValueError):
    """Bad input a user can fix: the message says what is wrong and what to do."""
