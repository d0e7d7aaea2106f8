"""Core hook implementations every run needs (an essential, unblockable plugin)."""

from __future__ import annotations

import os
from pathlib import Path

from . import hookimpl
from .config import SecretRef
from .model import Pr3dictError


class SecretNotFound(Pr3dictError):
    pass


@hookimpl(trylast=True)
def pr3dict_resolve_secret(ref: SecretRef) -> str | None:
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretNotFound(f"environment variable {ref.env} is not set")
        return value
    if ref.file is not None:
        path = Path(ref.file)
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SecretNotFound(f"cannot read secret file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretNotFound(f"secret file {path} is not UTF-8 text") from None
    return None
