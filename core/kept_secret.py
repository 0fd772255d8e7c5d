"""Logins a service and its clients share through the data folder: made once, readable by the owner alone."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path


def kept_secret(path: Path, user: str = "reviewlens") -> str:
    """The login ('user:password') kept in `path`, made on first use with a random password.
    It is written whole to a file of its own and then linked into place, which fails when another
    process was first: both then read one and the same login, never a half-written one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{user}:{secrets.token_urlsafe(24)}")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def split_login(login: str) -> tuple[str, str]:
    user, _, password = login.partition(":")
    return user, password


def basic_header(login: str) -> str:
    """The Authorization header that carries `login` ('user:secret') as HTTP basic auth."""
    return "Basic " + base64.b64encode(login.encode()).decode()
