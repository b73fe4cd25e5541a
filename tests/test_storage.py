"""One storage layer for local paths, s3:// (a moto server) and other fsspec URLs (memory://)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from recipes.common import storage
from tests.conftest import S3_BUCKET


@pytest.fixture(params=["local", "s3", "memory"])
def root(request, tmp_path: Path) -> str:
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return f"s3://{S3_BUCKET}/storage-test/{tmp_path.name}"
    if request.param == "memory":
        return f"memory://storage-test/{tmp_path.name}"
    return str(tmp_path / "root")


def test_files_round_trip_and_absent_files_read_as_none(root: str):
    target = storage.join(root, "zero-shot", "key", "metrics.json")
    assert storage.read_json(target) is None and not storage.exists(target)
    storage.write_json(target, {"acc": 50.0})
    assert storage.read_json(target) == {"acc": 50.0} and storage.exists(target)
    with storage.open_binary(target) as handle:
        assert handle.read().startswith(b"{")


def test_arrow_filesystem_sees_what_the_helpers_wrote(root: str):
    storage.write_bytes(storage.join(root, "a.bin"), b"abc")
    filesystem, inner = storage.arrow_filesystem(root)
    assert filesystem.get_file_info(f"{inner}/a.bin").type == pafs.FileType.File


@pytest.mark.parametrize(
    "path, remote, suffix, parent",
    [
        ("s3://bucket/sets/val.parquet", True, ".parquet", "s3://bucket/sets"),
        ("memory://x/suite.YAML", True, ".yaml", "memory://x"),
        ("file:///data/train.jsonl", False, ".jsonl", "/data"),
        ("/data/train.jsonl?v=2", False, ".jsonl", "/data"),
    ],
)
def test_paths_and_urls_are_told_apart(path: str, remote: bool, suffix: str, parent: str):
    assert storage.is_remote(path) == remote
    assert storage.file_suffix(path) == suffix
    assert storage.parent_dir(path.split("?")[0]) == parent


@pytest.mark.parametrize(
    "base, relative, resolved",
    [
        ("s3://bucket/suite", "val.parquet", "s3://bucket/suite/val.parquet"),
        ("s3://bucket/suite", "/abs/val.parquet", "/abs/val.parquet"),
        ("/data/suite", "memory://x/val.parquet", "memory://x/val.parquet"),
        ("/data/suite", "val.parquet", "/data/suite/val.parquet"),
    ],
)
def test_relative_entries_resolve_against_their_folder(base: str, relative: str, resolved: str):
    assert storage.resolve(base, relative) == resolved
