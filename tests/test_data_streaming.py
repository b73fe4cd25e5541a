"""Datasets read on demand: parquet row groups, the block-level shuffle, exact resume, S3, sampled checks.

python -m pytest tests/test_data_streaming.py
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.evaluate.suite_eval import contiguous_share
from recipes.data.readers import read_records, read_records_sample
from recipes.data.row_source import ParquetRows, TableRows, open_rows
from recipes.data.sampling import fraction_indices
from recipes.data.schema import RecordFormatError, records_to_table
from recipes.data.stream import MixSource, TrainingStream, build_train_stream
from recipes.data.suites import file_fingerprint
from tests.conftest import S3_BUCKET
from tests.data_fixtures import mcq_record, png_bytes

GROUP_ROWS = 50
"""Rows per row group of the files written here (so a few hundred rows make many row groups)."""


def write_grouped(records: list[dict], path: Path | str, group_rows: int = GROUP_ROWS) -> str:
    """``records`` as a parquet file of ``group_rows``-row groups (local path or s3:// URL)."""
    table = records_to_table(records)
    if str(path).startswith("s3://"):
        import s3fs

        with s3fs.S3FileSystem().open(str(path)[5:], "wb") as handle:
            pq.write_table(table, handle, row_group_size=group_rows)
    else:
        pq.write_table(table, path, row_group_size=group_rows)
    return str(path)


def grouped_records(prefix: str, count: int) -> list[dict]:
    image = png_bytes()
    return [mcq_record(i, id=f"{prefix}-{i}", image=image if i % 3 else None, source=prefix) for i in range(count)]


def freeform_records(count: int) -> list[dict]:
    return [
        {
            "id": f"chat-{i}",
            "kind": "freeform",
            "image": png_bytes(),
            "question": f"Describe picture {i}.",
            "answer": f"a red square number {i}",
            "history": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}] if i % 2 else [],
            "matcher": "exact",
            "source": "chat",
            "meta": "{}",
            "options": [],
        }
        for i in range(count)
    ]


@pytest.fixture()
def grouped_files(tmp_path) -> dict[str, str]:
    return {
        "target": write_grouped(grouped_records("target", 1000), tmp_path / "target.parquet"),
        "general": write_grouped(grouped_records("general", 300), tmp_path / "general.parquet"),
        "chat": write_grouped(freeform_records(120), tmp_path / "chat.parquet", group_rows=16),
    }


@pytest.mark.parametrize("name", ["target", "chat"])
def test_rows_read_by_row_group_equal_the_rows_read_whole(grouped_files, name):
    whole = read_records(grouped_files[name]).to_pylist()
    rows = ParquetRows(grouped_files[name], cached_groups=2)
    assert rows.num_rows == len(whole) and len(rows.chunk_starts) > 5
    picked = [7, len(whole) - 1, 0, 7, len(whole) // 2 + 1]
    assert rows.take(picked) == [whole[i] for i in picked]
    assert rows.kinds() == [row.get("kind", "mcq") for row in whole]
    assert rows.groups_cached <= 2


def test_an_epoch_uses_every_row_once_and_decodes_each_row_group_once(grouped_files):
    """The promise that bounds memory and I/O: reading an epoch in order holds one window at a time."""
    window = 4
    source = ParquetRows(grouped_files["target"], cached_groups=2 * window)  # a batch may straddle two windows
    stream = TrainingStream([("target", source)], [1.0], seed=3, shuffle_window=window)
    _, epoch0 = stream.locate(0, 1000)
    _, epoch1 = stream.locate(1000, 1000)
    assert sorted(epoch0) == list(range(1000)) and sorted(epoch1) == list(range(1000))
    assert list(epoch0) != list(epoch1) and list(epoch0[:50]) != list(range(50))
    for start in range(0, 1000, 8):  # batches of 8 end exactly at the epoch's end
        stream.rows(start, 8)
    assert source.groups_read == 1000 // GROUP_ROWS
    groups_in_windows = {
        tuple(sorted(set(epoch0[i : i + window * GROUP_ROWS] // GROUP_ROWS)))
        for i in range(0, 1000, window * GROUP_ROWS)
    }
    assert all(len(groups) == window for groups in groups_in_windows)


def test_a_source_within_one_window_is_a_plain_permutation(grouped_files):
    """Toy datasets (one window) keep the row-by-row shuffle they always had: the demo's numbers are unchanged."""
    source = ParquetRows(grouped_files["target"])
    table = TableRows(read_records(grouped_files["target"]))
    by_groups = TrainingStream([("target", source)], [1.0], seed=5, shuffle_window=len(source.chunk_starts))
    in_memory = TrainingStream([("target", table)], [1.0], seed=5)
    expected = np.random.default_rng([5, 0xE90C, 0, 0]).permutation(1000)
    assert list(by_groups.locate(0, 1000)[1]) == list(in_memory.locate(0, 1000)[1]) == list(expected)


def _next_batch_in_a_fresh_process(files: dict[str, str], position: int, queue) -> None:
    stream = build_train_stream(files["target"], 0.5, [MixSource(files["general"], 0.25), MixSource(files["chat"], 0.1)], 11,
                                shuffle_window=3)  # fmt: skip
    queue.put([row["id"] for row in stream.rows(position, 16)])


def test_a_relaunched_stream_continues_at_its_data_position_with_the_same_batch(grouped_files):
    stream = build_train_stream(
        grouped_files["target"], 0.5, [MixSource(grouped_files["general"], 0.25), MixSource(grouped_files["chat"], 0.1)], 11,
        shuffle_window=3,
    )  # fmt: skip
    seen = [row["id"] for start in range(0, 1600, 16) for row in stream.rows(start, 16)]
    continuing = [row["id"] for row in stream.rows(1600, 16)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    relaunched = context.Process(target=_next_batch_in_a_fresh_process, args=(grouped_files, 1600, queue))
    relaunched.start()
    assert queue.get(timeout=120) == continuing
    relaunched.join(timeout=60)
    target_ids = [i for i in seen if i.startswith("target-")][:500]  # the target's first epoch
    assert sorted(target_ids) == sorted(f"target-{i}" for i in fraction_indices(1000, 0.5, 11))


def test_fractions_and_mixing_ratios_are_exact_over_blocks_on_row_groups(grouped_files):
    stream = build_train_stream(
        grouped_files["target"],
        0.1,
        [MixSource(grouped_files["general"], 0.3), MixSource(grouped_files["chat"], 0.2)],
        4,
    )
    assert stream.tables[0].num_rows == 100
    assert stream.realized_ratios(0, 10_000) == pytest.approx({"target": 0.5, "general": 0.3, "chat": 0.2})
    sources, rows = stream.locate(0, 1000)
    assert sorted(rows[sources == 0][:100]) == list(range(100))  # every target row once before any repeats
    picked = stream.tables[0].take(range(100))
    assert [row["id"] for row in picked] == [f"target-{i}" for i in fraction_indices(1000, 0.1, 4)]


@pytest.mark.parametrize("count, world", [(0, 2), (1, 2), (7, 2), (8, 3), (41, 4), (5, 8)])
def test_every_evaluation_batch_is_answered_by_exactly_one_rank(count, world):
    shares = [list(contiguous_share(count, rank, world)) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_s3_rows_and_streams_equal_the_local_ones(grouped_files, s3_endpoint):
    local = grouped_files["target"]
    remote = write_grouped(grouped_records("target", 1000), f"s3://{S3_BUCKET}/streaming/target.parquet")
    rows = open_rows(remote)
    assert isinstance(rows, ParquetRows) and rows.num_rows == 1000
    assert rows.take([3, 999, 420]) == ParquetRows(local).take([3, 999, 420])
    from_s3 = build_train_stream(remote, 0.3, [], 2, shuffle_window=2)
    from_disk = build_train_stream(local, 0.3, [], 2, shuffle_window=2)
    assert from_s3.rows(250, 16) == from_disk.rows(250, 16)
    assert [row["id"] for row in read_records_sample(remote).to_pylist()][:3] == ["target-0", "target-1", "target-2"]


def test_a_remote_suite_file_is_fingerprinted_by_its_content_tag_without_a_download(s3_endpoint):
    url = f"s3://{S3_BUCKET}/streaming/val.parquet"
    write_grouped(grouped_records("val", 100), url)
    before = file_fingerprint(url)
    write_grouped(grouped_records("val", 100), url)
    assert file_fingerprint(url) == before
    write_grouped(grouped_records("val", 101), url)
    assert file_fingerprint(url) != before


def test_the_sampled_check_reads_a_few_row_groups_and_every_row_only_when_asked(tmp_path):
    records = grouped_records("target", 1000)
    records[0]["answer"] = "Z"
    first_bad = write_grouped(records, tmp_path / "first-bad.parquet")
    with pytest.raises(RecordFormatError, match=r"(?s)first-bad.parquet.*row 1 "):
        read_records_sample(first_bad)
    records[0]["answer"] = "B"
    sample = read_records_sample(write_grouped(records, tmp_path / "good.parquet"))
    sampled_groups = sorted({int(row["id"].split("-")[1]) // GROUP_ROWS for row in sample.to_pylist()})
    assert len(sampled_groups) == 2 and sampled_groups[0] == 0
    records[sampled_groups[1] * GROUP_ROWS + 5]["answer"] = "Z"
    with pytest.raises(RecordFormatError, match=f"row {sampled_groups[1] * GROUP_ROWS + 6} "):
        read_records_sample(write_grouped(records, tmp_path / "sampled-bad.parquet"))
    records[sampled_groups[1] * GROUP_ROWS + 5]["answer"] = "B"
    unsampled = next(group for group in range(1000 // GROUP_ROWS) if group not in sampled_groups)
    records[unsampled * GROUP_ROWS + 3]["answer"] = "Z"
    late_bad = write_grouped(records, tmp_path / "late-bad.parquet")
    assert read_records_sample(late_bad).num_rows == 2 * GROUP_ROWS
    with pytest.raises(RecordFormatError, match=f"row {unsampled * GROUP_ROWS + 4} "):
        read_records_sample(late_bad, every_row=True)
    with pytest.raises(RecordFormatError, match=f"late-bad.parquet.*\\n.*row {unsampled * GROUP_ROWS + 4} "):
        ParquetRows(late_bad).take([unsampled * GROUP_ROWS])  # training reaches the bad row's group
