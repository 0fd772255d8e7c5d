"""The project's own error type: what a user can fix, as opposed to a bug.

The command prints these as one line that says what to do; anything else is a bug and keeps
its traceback.
"""


class ReviewlensError(Exception):
    """Something the user can fix: bad settings, a missing server, input that is not usable."""


class ConfigError(ReviewlensError, ValueError):
    """A setting that is unknown or out of range; the message lists the valid ones."""


def quoted(value: object, limit: int = 200) -> str:
    """`value` as an error message quotes it: at most `limit` characters, and how many more there were.
    Whatever a file or a request sent is echoed no longer than that."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} characters more)"
