"""Where files live: local paths, ``s3://`` and the other URLs fsspec knows (``gs://``, ``memory://``).

Datasets, suites, checkpoints, the zero-shot cache and reports all go through these helpers, so
a path means the same thing everywhere. S3 goes through s3fs, configured the usual AWS way:
credentials from the environment, a profile or the instance role; a non-AWS endpoint (MinIO, a
moto server) from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``. Nothing here logs credentials.

    from recipes.common import storage
    storage.is_remote("s3://bucket/x.parquet")          # True (any scheme but file://)
    storage.resolve("s3://bucket/suite", "a.parquet")   # "s3://bucket/suite/a.parquet"
    storage.write_json(storage.join("s3://bucket/sweeps", "x.json"), {...})
    fs, root = storage.arrow_filesystem("s3://bucket/sweeps")   # for Ray Train's storage
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import s3fs

S3_PREFIX = "s3://"
FILE_PREFIX = "file://"


def is_remote(path: str | os.PathLike) -> bool:
    """True for URLs with a scheme other than ``file://`` (handled by fsspec)."""
    text = str(path)
    return "://" in text and not text.startswith(FILE_PREFIX)


def is_s3(path: str | os.PathLike) -> bool:
    """True for ``s3://`` URLs."""
    return str(path).startswith(S3_PREFIX)


def local_path(path: str | os.PathLike) -> str:
    """A local path without its ``file://`` prefix."""
    text = str(path)
    return text[len(FILE_PREFIX) :] if text.startswith(FILE_PREFIX) else text


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment (for MinIO or a local test server)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def filesystem(path: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for a local path or URL."""
    text = str(path)
    if is_s3(text):
        endpoint = s3_endpoint()
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {})
        return fs, text[len(S3_PREFIX) :]
    if is_remote(text):
        return fsspec.core.url_to_fs(text)
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(local_path(text)))


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for Ray Train's ``storage_filesystem``."""
    if is_remote(uri):
        fs, inner = filesystem(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(local_path(uri)).expanduser().resolve())


def arrow_input_file(path: str | os.PathLike) -> Any:
    """A random-access pyarrow file (``pyarrow.NativeFile``) for a local path or URL.

    ``s3://`` goes through pyarrow's own S3 client (ranged reads in C++, no Python buffers; the
    same credential chain and endpoint override as above), other URLs through fsspec.
    """
    text = str(path)
    if is_s3(text):
        endpoint = s3_endpoint()
        if endpoint:
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            fs: pafs.FileSystem = pafs.S3FileSystem(endpoint_override=endpoint, region=region)
            inner = text[len(S3_PREFIX) :]
        else:
            fs, inner = pafs.FileSystem.from_uri(text)  # finds the bucket's region
        return fs.open_input_file(inner)
    if is_remote(text):
        fs_, inner = filesystem(text)
        return pa.PythonFile(fs_.open(inner, "rb"), mode="r")
    return pafs.LocalFileSystem().open_input_file(os.path.abspath(os.path.expanduser(local_path(text))))


def exists(path: str | os.PathLike) -> bool:
    """Whether a local path or URL exists."""
    fs, inner = filesystem(path)
    return fs.exists(inner)


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """A readable binary file object for a local path or URL."""
    if is_remote(path):
        fs, inner = filesystem(path)
        return fs.open(inner, "rb")
    return open(local_path(path), "rb")


def file_suffix(path: str | os.PathLike) -> str:
    """The lower-case suffix of a path or URL (a query string ignored): ``.parquet``."""
    return posixpath.splitext(str(path).split("?")[0])[1].lower()


def parent_dir(path: str | os.PathLike) -> str:
    """The folder of a local file (absolute) or URL."""
    text = str(path)
    if is_remote(text):
        return posixpath.dirname(text)
    return os.path.dirname(os.path.abspath(local_path(text)))


def resolve(base_dir: str, relative: str) -> str:
    """``relative`` resolved against ``base_dir`` (a local folder or URL prefix); absolute paths and URLs stay."""
    if is_remote(relative) or os.path.isabs(relative):
        return relative
    if is_remote(base_dir):
        return posixpath.join(base_dir, relative)
    return os.path.join(base_dir, relative)


def join(uri: str, *parts: str) -> str:
    """Path pieces joined onto a storage root (local or URL) with ``/``."""
    return "/".join([uri.rstrip("/"), *parts])


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file, creating parent directories (local or URL)."""
    fs, inner = filesystem(uri)
    fs.makedirs(posixpath.dirname(inner), exist_ok=True)
    with fs.open(inner, "wb") as handle:
        handle.write(data)


def read_bytes(uri: str) -> bytes | None:
    """A whole file's bytes, or None when it does not exist (local or URL)."""
    fs, inner = filesystem(uri)
    try:
        with fs.open(inner, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def write_json(uri: str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON."""
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(uri: str) -> Any | None:
    """The JSON in a file, or None when it does not exist."""
    data = read_bytes(uri)
    return None if data is None else json.loads(data)
