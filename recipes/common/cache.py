"""Content-addressed build cache shared by every process of a sweep.

Things that are expensive to make and identical for everyone who asks (the toy world's
datasets, the toy base model, zero-shot results) are built once into
``$FORGETLESS_CACHE/<kind>/<key>/`` (default ``~/.cache/forgetless``) and reused:

    from recipes.common.cache import cached_dir, content_key
    key = content_key({"generator": 3, "seed": 0})
    path = cached_dir("toy-world", key, build=lambda tmp: generate_into(tmp))

``build`` writes into a fresh temporary directory next to the final one; the directory is
renamed into place only when ``build`` returns, under a file lock, so concurrent Ray workers
that race to build the same key wait for the first one and then use its result, and a build
that crashes leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

CACHE_ENV = "FORGETLESS_CACHE"
"""Environment variable that moves the cache root (default ``~/.cache/forgetless``)."""


def cache_root() -> Path:
    """The cache root directory: ``$FORGETLESS_CACHE`` or ``~/.cache/forgetless``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "forgetless").expanduser()


def content_key(obj: Any, length: int = 16) -> str:
    """A stable hex key of a JSON-serialisable object (dict keys are sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def cached_dir(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return ``<cache>/<kind>/<key>``, running ``build(tmp_dir)`` first if it does not exist yet."""
    final = cache_root() / kind / key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():  # another process built it while we waited for the lock
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            build(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
