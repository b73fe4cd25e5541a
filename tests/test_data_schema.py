"""The MCQ contract: reading, validation errors, skipping bad rows, writing, prompts."""

from __future__ import annotations

import base64
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipes.data.prompts import mcq_instruction, mcq_prompt
from recipes.data.readers import read_records, read_records_report, skipped_row_count
from recipes.data.schema import LETTERS, MCQ_COLUMNS, MCQ_SCHEMA, RecordFormatError, answer_index, option_letter
from recipes.data.writers import write_records
from tests.data_fixtures import mcq_record, png_bytes


def write_raw_parquet(path, records):
    """Write records without validation (how a broken file from elsewhere looks)."""
    pq.write_table(pa.Table.from_pylist(records, schema=pa.schema([f.with_nullable(True) for f in MCQ_SCHEMA])), path)
    return path


def write_jsonl(path, objects):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))
    return path


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "letter"), [(0, "A"), (1, "B"), (3, "D"), (25, "Z")])
def test_option_letter(index, letter):
    assert option_letter(index) == letter
    assert LETTERS[index] == letter


@pytest.mark.parametrize("index", [-1, 26])
def test_option_letter_out_of_range(index):
    with pytest.raises(ValueError, match="out of range"):
        option_letter(index)


@pytest.mark.parametrize(
    ("answer", "options", "expected"), [("A", ["x", "y"], 0), ("D", list("abcd"), 3), ("B", list("abc"), 1)]
)
def test_answer_index(answer, options, expected):
    assert answer_index({"answer": answer, "options": options}) == expected


@pytest.mark.parametrize(
    ("answer", "options"), [("E", list("abcd")), ("", ["x"]), ("AB", list("abcd")), ("a", list("abcd"))]
)
def test_answer_index_rejects(answer, options):
    with pytest.raises(ValueError, match="is not a letter"):
        answer_index({"answer": answer, "options": options})


def test_mcq_prompt_text():
    assert mcq_prompt(" What is it? ", ["red circle", "blue square", "green star"]) == (
        "What is it?\nA. red circle\nB. blue square\nC. green star\nPlease answer with a single letter (A, B, or C)."
    )


@pytest.mark.parametrize(
    "count, instruction",
    [
        (1, "Please answer with a single letter (A)."),
        (2, "Please answer with a single letter (A or B)."),
        (4, "Please answer with a single letter (A, B, C, or D)."),
        (6, "Please answer with a single letter (A, B, C, D, E, or F)."),
    ],
)
def test_mcq_instruction_lists_the_option_letters(count, instruction):
    assert mcq_instruction(count) == instruction


def test_mcq_prompt_needs_options():
    with pytest.raises(ValueError, match="at least one option"):
        mcq_prompt("What?", [])


# -- round trips ---------------------------------------------------------------------------------


def test_parquet_round_trip_keeps_every_field(tmp_path):
    records = [
        mcq_record(0, image=png_bytes()),
        mcq_record(1, answer="D", meta='{"classname": "dog"}'),
        mcq_record(2, image=None),
    ]
    path = write_records(records, tmp_path / "set.parquet")
    table = read_records(path)
    assert table.schema == MCQ_SCHEMA
    assert table.to_pylist() == records
    assert skipped_row_count(table) == 0


def test_write_accepts_meta_dicts_and_tables(tmp_path):
    write_records([mcq_record(0, meta={"b": 1, "a": [1, 2]})], tmp_path / "a.parquet")
    table = read_records(tmp_path / "a.parquet")
    assert json.loads(table.column("meta")[0].as_py()) == {"a": [1, 2], "b": 1}
    write_records(table, tmp_path / "b.parquet")
    assert read_records(tmp_path / "b.parquet").to_pylist() == table.to_pylist()


def test_parquet_without_optional_columns_gets_defaults(tmp_path):
    path = tmp_path / "minimal.parquet"
    pq.write_table(pa.table({"id": ["a"], "question": ["q?"], "options": [["x", "y"]], "answer": ["B"]}), path)
    assert read_records(path).to_pylist() == [
        {
            "id": "a",
            "image": None,
            "question": "q?",
            "options": ["x", "y"],
            "answer": "B",
            "source": "minimal",
            "meta": "{}",
        }
    ]


def test_missing_required_columns_are_named(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["q?"]}), path)
    with pytest.raises(RecordFormatError, match=r"wrong\.parquet.*missing column\(s\) question, options, answer"):
        read_records(path)


def test_jsonl_images_base64_path_and_null(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "red.png").write_bytes(png_bytes((255, 0, 0)))
    blue = png_bytes((0, 0, 255))
    path = write_jsonl(
        tmp_path / "set.jsonl",
        [
            {**mcq_record(0), "image": "pics/red.png"},
            {**mcq_record(1), "image": base64.b64encode(blue).decode()},
            {**mcq_record(2), "image": "data:image/png;base64," + base64.b64encode(blue).decode()},
            {k: v for k, v in mcq_record(3).items() if k not in ("image", "source", "meta")},
        ],
    )
    rows = read_records(path).to_pylist()
    assert [r["image"] for r in rows] == [png_bytes((255, 0, 0)), blue, blue, None]
    assert rows[3]["source"] == "set" and rows[3]["meta"] == "{}"


# -- bad rows ------------------------------------------------------------------------------------

BAD_ROWS = {
    "empty options": ({"options": []}, "options is empty"),
    "answer outside options": ({"answer": "E"}, "answer 'E' is not a letter of the options (A-D)"),
    "answer not a letter": ({"answer": "cat"}, "answer 'cat' is not a letter of the options (A-D)"),
    "empty option": ({"options": ["cat", " ", "bird"]}, "option B is empty"),
    "empty question": ({"question": "  "}, "question is empty"),
    "meta not json": ({"meta": "{classname: dog"}, "meta is not valid JSON"),
    "meta not an object": ({"meta": "[1, 2]"}, "meta is JSON but not an object (got list)"),
    "image not decodable": ({"image": b"not a png at all"}, "image cannot be decoded by PIL"),
    "truncated png": ({"image": png_bytes()[:40]}, "image cannot be decoded by PIL"),
    "duplicate id": ({"id": "q0"}, "id 'q0' is also used by row 1"),
}


@pytest.mark.parametrize(("change", "problem"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_parquet_row_names_file_row_and_problem(tmp_path, change, problem):
    path = write_raw_parquet(tmp_path / "bad.parquet", [mcq_record(0), mcq_record(1), mcq_record(2, **change)])
    with pytest.raises(RecordFormatError) as caught:
        read_records(path)
    expected_id = change.get("id", "q2")
    header, detail = str(caught.value).splitlines()
    assert header == f"{path}: 1 bad row (pass skip_bad=True (--skip-bad) to skip them)"
    assert detail.startswith(f"  row 3 (id {expected_id!r}): {problem}")
    assert caught.value.bad_rows[0].problem.startswith(problem)


def test_empty_id_is_bad(tmp_path):
    path = write_raw_parquet(tmp_path / "bad.parquet", [mcq_record(0, id="")])
    with pytest.raises(RecordFormatError, match=r"row 1 \(id ''\): id is empty"):
        read_records(path)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_skip_bad_drops_rows_and_reports_count(tmp_path, caplog, suffix):
    records = [mcq_record(0), mcq_record(1, answer="Q"), mcq_record(2), mcq_record(3, options=[]), mcq_record(4)]
    path = tmp_path / f"mixed{suffix}"
    if suffix == ".parquet":
        write_raw_parquet(path, records)
    else:
        write_jsonl(path, records)
    with pytest.raises(RecordFormatError, match="2 bad rows"):
        read_records(path)
    with caplog.at_level(logging.WARNING, logger="forgetless.data"):
        report = read_records_report(path, skip_bad=True)
    assert report.table.column("id").to_pylist() == ["q0", "q2", "q4"]
    assert report.skipped_count == 2 and skipped_row_count(report.table) == 2
    assert [b.row_id for b in report.skipped] == ["q1", "q3"]
    assert f"{path}: skipped 2 bad rows" in caplog.text


JSONL_BAD_LINES = {
    "invalid json": ('{"id": "x", "question": ', "line 2: invalid JSON"),
    "not an object": ("[1, 2]", "line 2: line is JSON but not an object (got list)"),
    "missing fields": ({"id": "x", "question": "q?"}, "line 2 (id 'x'): missing field(s) options, answer"),
    "options not a list": ({**mcq_record(9), "options": "a, b"}, "line 2 (id 'q9'): options must be a list of strings"),
    "missing image file": (
        {**mcq_record(9), "image": "pics/missing.png"},
        "line 2 (id 'q9'): image file 'pics/missing.png' cannot be read",
    ),
    "image not base64": (
        {**mcq_record(9), "image": "not base64!"},
        "line 2 (id 'q9'): image is neither a file path nor valid base64 text",
    ),
    "answer outside options": (
        {**mcq_record(9), "answer": "F"},
        "line 2 (id 'q9'): answer 'F' is not a letter of the options (A-D)",
    ),
}


@pytest.mark.parametrize(("line", "message"), JSONL_BAD_LINES.values(), ids=JSONL_BAD_LINES.keys())
def test_bad_jsonl_line_names_file_line_and_problem(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [mcq_record(0), line])
    with pytest.raises(RecordFormatError) as caught:
        read_records(path)
    assert str(caught.value).startswith(f"{path}: 1 bad row")
    assert f"  {message}" in str(caught.value)


def test_error_lists_many_bad_rows_then_summarises(tmp_path):
    path = write_raw_parquet(tmp_path / "bad.parquet", [mcq_record(i, answer="Z") for i in range(25)])
    with pytest.raises(RecordFormatError) as caught:
        read_records(path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}: 25 bad rows") and lines[-1] == "  ... and 5 more" and len(lines) == 22


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("set.csv", RecordFormatError, "unknown extension '.csv'"),
        ("absent.parquet", FileNotFoundError, "no such MCQ file"),
    ],
)
def test_unreadable_files(tmp_path, name, error, message):
    if name.endswith(".csv"):
        (tmp_path / name).write_text("id\n")
    with pytest.raises(error, match=message):
        read_records(tmp_path / name)


# -- writing -------------------------------------------------------------------------------------


def test_write_refuses_to_overwrite(tmp_path):
    path = write_records([mcq_record(0)], tmp_path / "set.parquet")
    before = (tmp_path / "set.parquet").read_bytes()
    with pytest.raises(FileExistsError, match=r"set\.parquet already exists; pass overwrite=True"):
        write_records([mcq_record(1)], path)
    assert (tmp_path / "set.parquet").read_bytes() == before
    write_records([mcq_record(1)], path, overwrite=True)
    assert read_records(path).column("id").to_pylist() == ["q1"]


def test_write_of_bad_rows_writes_nothing(tmp_path):
    with pytest.raises(
        RecordFormatError, match=r"out\.parquet: 1 bad row \(nothing was written\)\n  row 2 \(id 'q1'\): answer 'X'"
    ):
        write_records([mcq_record(0), mcq_record(1, answer="X")], tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['label'\]"):
        write_records([{**mcq_record(0), "label": "B"}], tmp_path / "out.parquet")


def test_url_paths_through_fsspec():
    url = "memory://forgetless-tests/sets/val.parquet"
    records = [mcq_record(0, image=png_bytes()), mcq_record(1)]
    write_records(records, url, overwrite=True)
    assert read_records(url).to_pylist() == records
    with pytest.raises(FileExistsError):
        write_records(records, url)


def test_contract_columns():
    assert MCQ_COLUMNS == ("id", "image", "question", "options", "answer", "source", "meta")
    assert [f.nullable for f in MCQ_SCHEMA] == [False, True, False, False, False, False, False]


def test_hugging_face_image_structs_are_read_as_bytes(tmp_path):
    path = tmp_path / "hf.parquet"
    rows = [{**mcq_record(0), "image": {"bytes": png_bytes(), "path": "a.png"}}, {**mcq_record(1), "image": None}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert read_records(path).column("image").to_pylist() == [png_bytes(), None]


def test_inspect_command(tmp_path, capsys):
    from recipes.data.__main__ import main

    good = write_records(
        [mcq_record(i, answer="ABCD"[i % 4], image=png_bytes() if i == 0 else None) for i in range(8)],
        tmp_path / "set.parquet",
    )
    assert main(["inspect", good, "--samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "8 rows" in printed and "options per question: 4: 8" in printed
    assert "answer letters: A 2 (25.0%), B 2 (25.0%), C 2 (25.0%), D 2 (25.0%)" in printed
    assert "sources: fixture 8" in printed and "(PNG 8x8)" in printed and "  B. dog" in printed

    bad = write_jsonl(
        tmp_path / "bad.jsonl", [mcq_record(0), mcq_record(1, answer="E"), mcq_record(2, options=[]), mcq_record(3)]
    )
    assert main(["inspect", str(bad)]) == 2
    assert f"error: {bad}: 2 bad rows" in capsys.readouterr().err
    assert main(["inspect", str(bad), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "2 rows" in printed and "skipped 2 bad rows:" in printed and "line 2 (id 'q1'): answer 'E'" in printed
