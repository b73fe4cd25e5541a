"""Free-form records next to MCQ ones: the contract, its storage and its bad-row reporting."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from recipes.data.schema import (
    MCQ_SCHEMA,
    RECORD_SCHEMA,
    MCQFormatError,
    concat_records,
    read_mcq,
    read_mcq_report,
    row_history,
    row_images,
    row_kind,
    write_mcq,
)
from recipes.data.summary import summarize
from tests.data_fixtures import mcq_record, png_bytes


def freeform_record(index: int, **changes) -> dict:
    """A valid free-form record: two images, a two-turn conversation, a free-text answer."""
    record = {
        "id": f"f{index}",
        "image": png_bytes((200, 0, 0)),
        "extra_images": [png_bytes((0, 0, 200))],
        "question": "And in <image 2>?",
        "options": [],
        "answer": "a blue square",
        "source": "fixture",
        "meta": "{}",
        "kind": "freeform",
        "history": [
            {"role": "user", "text": "What is in <image 1>?"},
            {"role": "assistant", "text": "a red square"},
        ],
        "matcher": "exact",
    }
    record.update(changes)
    return record


def test_mixed_table_round_trips_with_every_image_and_turn(tmp_path):
    records = [mcq_record(0, image=png_bytes()), freeform_record(1)]
    table = read_mcq(write_mcq(records, tmp_path / "mixed.parquet"))
    assert table.schema == RECORD_SCHEMA
    mcq, freeform = table.to_pylist()
    assert (row_kind(mcq), row_kind(freeform)) == ("mcq", "freeform")
    assert row_images(freeform) == [png_bytes((200, 0, 0)), png_bytes((0, 0, 200))]
    assert row_history(freeform)[1] == {"role": "assistant", "text": "a red square"}
    assert mcq["matcher"] is None and mcq["history"] == [] and mcq["extra_images"] == []


def test_plain_mcq_files_keep_the_mcq_schema(tmp_path):
    path = write_mcq([mcq_record(0)], tmp_path / "plain.parquet")
    assert pq.read_schema(path).names == list(MCQ_SCHEMA.names)
    assert read_mcq(path).schema == MCQ_SCHEMA


def test_mcq_and_freeform_tables_concatenate(tmp_path):
    plain = read_mcq(write_mcq([mcq_record(0)], tmp_path / "a.parquet"))
    mixed = read_mcq(write_mcq([freeform_record(1)], tmp_path / "b.parquet"))
    joined = concat_records([plain, mixed])
    assert joined.schema == RECORD_SCHEMA and [row_kind(r) for r in joined.to_pylist()] == ["mcq", "freeform"]


def test_jsonl_freeform_rows_need_no_options(tmp_path):
    path = tmp_path / "chat.jsonl"
    row = {"id": "c1", "kind": "freeform", "question": "Say hi.", "answer": "hi", "matcher": "exact"}
    path.write_text(json.dumps(row) + "\n")
    [read] = read_mcq(path).to_pylist()
    assert read["options"] == [] and read["source"] == "chat" and read["history"] == []


BAD_FREEFORM = {
    "unknown matcher": ({"matcher": "fuzzy"}, "matcher 'fuzzy' is not one of"),
    "no matcher": ({"matcher": None}, "matcher None is not one of"),
    "empty answer": ({"answer": " "}, "answer is empty"),
    "options on free-form": ({"options": ["x", "y"]}, "has no options (got 2)"),
    "history starts with assistant": (
        {"history": [{"role": "assistant", "text": "x"}, {"role": "user", "text": "y"}]},
        "history[0].role is 'assistant', expected 'user'",
    ),
    "history ends with user": ({"history": [{"role": "user", "text": "x"}]}, "history ends with a user turn"),
    "empty turn": (
        {"history": [{"role": "user", "text": "x"}, {"role": "assistant", "text": ""}]},
        "history[1].text is empty",
    ),
    "unknown kind": ({"kind": "essay"}, "kind 'essay' is not one of mcq, freeform"),
    "bad second image": ({"extra_images": [b"not a png"]}, "extra_images[0]: image cannot be decoded"),
    "second image without a first": ({"image": None}, "extra_images without a first image"),
}


@pytest.mark.parametrize("case", BAD_FREEFORM, ids=list(BAD_FREEFORM))
def test_bad_freeform_rows_name_row_and_field(tmp_path, case):
    changes, expected = BAD_FREEFORM[case]
    with pytest.raises(MCQFormatError) as error:
        write_mcq([mcq_record(0), freeform_record(1, **changes)], tmp_path / "bad.parquet")
    assert "row 2 (id 'f1')" in str(error.value) and expected in str(error.value)
    assert not (tmp_path / "bad.parquet").exists()


def test_bad_freeform_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [freeform_record(0, image=None, extra_images=[]), freeform_record(1, image=None, extra_images=[], matcher="?")]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = read_mcq_report(path, skip_bad=True)
    assert report.table.num_rows == 1 and report.skipped[0].describe().startswith("line 2 (id 'f1'): matcher '?'")


def test_inspect_counts_kinds_matchers_and_images():
    from recipes.data.schema import records_to_table

    text = summarize(records_to_table([mcq_record(0), freeform_record(1)]), samples=2)
    assert "kinds: mcq 1, freeform 1" in text and "matchers: exact 1" in text
    assert "rows with several images: 1" in text and "  assistant: a red square" in text
