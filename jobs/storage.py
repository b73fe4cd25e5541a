"""Where sweeps keep checkpoints and caches: a local directory or ``s3://bucket/prefix``.

S3 goes through s3fs (wrapped as a pyarrow filesystem for Ray Train), configured the usual AWS
way: credentials from the environment, a profile or the instance role; a non-AWS endpoint
(MinIO, a moto server) from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``. Nothing here ever
logs credentials.

    fs, path = storage_filesystem("s3://bucket/sweeps")   # (pyarrow FileSystem, "bucket/sweeps")
    write_json("s3://bucket/sweeps/x.json", {...}); read_json(...)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

S3_PREFIX = "s3://"


def is_remote(uri: str) -> bool:
    """True for ``s3://`` storage."""
    return uri.startswith(S3_PREFIX)


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment (for MinIO or a local test server)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3fs_filesystem():
    """An ``s3fs.S3FileSystem`` configured from the environment."""
    import s3fs

    endpoint = s3_endpoint()
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {})


def storage_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or an ``s3://`` URI."""
    if is_remote(uri):
        return pafs.PyFileSystem(pafs.FSSpecHandler(s3fs_filesystem())), uri[len(S3_PREFIX) :].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def join(uri: str, *parts: str) -> str:
    """Join path pieces onto a storage URI (local or s3)."""
    return "/".join([uri.rstrip("/"), *parts])


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file, creating parent directories (local or s3)."""
    fs, path = storage_filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def read_bytes(uri: str) -> bytes | None:
    """A whole file's bytes, or None when it does not exist (local or s3)."""
    fs, path = storage_filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(uri: str) -> Any | None:
    data = read_bytes(uri)
    return None if data is None else json.loads(data)
