"""Files a user names (a settings file, a photo to import) read within a budget checked first.

Only a regular file is read: a FIFO or a device such as /dev/zero would be read for ever. Its
size is checked before a byte is read, and the read stops one byte past the budget, so a file
that grows meanwhile is caught too.
"""

from __future__ import annotations

import stat
from pathlib import Path

from core.errors import ReviewlensError


class OverFileBudget(ReviewlensError, OSError):
    """A file that is not a regular one, or larger than its budget; the message says which."""


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes`; raises OverFileBudget, or the
    OSError of a file that cannot be opened."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OverFileBudget("is not a regular file")
    if info.st_size > max_bytes:
        raise OverFileBudget(f"holds {info.st_size:,} bytes: at most {max_bytes:,}")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OverFileBudget(f"holds more than {max_bytes:,} bytes")
    return data
