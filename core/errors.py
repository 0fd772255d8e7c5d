"""The project's own error type: what a user can fix, as opposed to a bug.

The command prints these as one line that says what to do; anything else is a bug and keeps
its traceback.
"""


class ReviewlensError(Exception):
    """Something the user can fix: bad settings, a missing server, input that is not usable."""


class ConfigError(ReviewlensError, ValueError):
    """A setting that is unknown or out of range; the message lists the valid ones."""
