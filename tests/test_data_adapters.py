"""Adapters: ImageWikiQA jsonl, VMCBench (parquet / TSV / jsonl), MMMU multiple-choice."""

from __future__ import annotations

import base64
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipes.adapters.formats import adapt, adapt_file
from recipes.adapters.rows import parse_label, split_question_options
from recipes.data.__main__ import main
from recipes.data.readers import read_records
from recipes.data.schema import RecordFormatError
from tests.data_fixtures import png_bytes

RED, BLUE = png_bytes((255, 0, 0), size=10), png_bytes((0, 0, 255), size=20)


def wikiqa_text(question: str, options: list[str]) -> str:
    return "\n".join([question, *(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)), "Choose A, B, C, or D."])


def write_jsonl(path, objects):
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return path


@pytest.fixture
def imagewikiqa_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "val_1.JPEG").write_bytes(RED)
    (tmp_path / "images" / "val_2.JPEG").write_bytes(BLUE)
    return write_jsonl(
        tmp_path / "imagewikiqa.jsonl",
        [
            {"image": "images/val_1.JPEG", "text": wikiqa_text("What is this object made of?", ["Glass", "Wood", "Stone", "Metal"]), "label": "C", "wiki": "It is carved from stone.", "classname": "obelisk"},  # noqa: E501 (a table row)
            {"image": "images/val_2.JPEG", "text": wikiqa_text("Where does this object live?", ["Desert", "Ocean", "Forest", "Sky"]), "label": 1, "wiki": "It swims.", "classname": "whale"},  # noqa: E501 (a table row)
        ],
    )  # fmt: skip


# -- parsing ---------------------------------------------------------------------------------------

SPLITS = {
    "imagewikiqa layout": ("Which one?\nA. x\nB. y\nC. z\nD. w\nChoose A, B, C, or D.", ("Which one?", ["x", "y", "z", "w"], "Choose A, B, C, or D.")),  # noqa: E501 (a table row)
    "two-line question, no instruction": ("Look closely.\nWhich one?\nA) x\nB) y", ("Look closely.\nWhich one?", ["x", "y"], "")),
    "a lone A. line in the question": ("A. Smith said so.\nWhich one?\nA. x\nB. y", ("A. Smith said so.\nWhich one?", ["x", "y"], "")),
}  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), SPLITS.values(), ids=SPLITS.keys())
def test_split_question_options(text, expected):
    assert split_question_options(text) == expected


def test_text_without_options_is_an_error():
    with pytest.raises(ValueError, match="no lettered option lines"):
        split_question_options("What is this?\nChoose A, B, C, or D.")


@pytest.mark.parametrize(
    ("label", "count", "letter"), [("C", 4, "C"), ("b", 4, "B"), (0, 4, "A"), ("3", 4, "D"), (1, 2, "B")]
)
def test_parse_label(label, count, letter):
    assert parse_label(label, count) == letter


@pytest.mark.parametrize(("label", "count"), [(4, 4), ("E5", 4), (None, 4), (True, 4), ("", 4)])
def test_parse_label_rejects(label, count):
    with pytest.raises(ValueError):
        parse_label(label, count)


# -- ImageWikiQA -----------------------------------------------------------------------------------


def test_imagewikiqa(imagewikiqa_file):
    adapted = adapt_file("imagewikiqa", imagewikiqa_file)
    rows = adapted.table.to_pylist()
    assert [r["question"] for r in rows] == ["What is this object made of?", "Where does this object live?"]
    assert [r["options"] for r in rows] == [["Glass", "Wood", "Stone", "Metal"], ["Desert", "Ocean", "Forest", "Sky"]]
    assert [r["answer"] for r in rows] == ["C", "B"]
    assert [r["image"] for r in rows] == [RED, BLUE]
    meta = json.loads(rows[0]["meta"])
    assert (
        meta["classname"] == "obelisk"
        and meta["wiki"] == "It is carved from stone."
        and meta["instruction"] == "Choose A, B, C, or D."
    )
    assert [r["id"] for r in rows] == ["imagewikiqa-1", "imagewikiqa-2"]


def test_imagewikiqa_image_root(tmp_path, imagewikiqa_file):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "wiki.jsonl"
    moved.write_text(imagewikiqa_file.read_text())
    assert adapt_file("imagewikiqa", moved, image_root=str(tmp_path)).rows == 2


def test_imagewikiqa_bad_rows_name_file_line_and_problem(tmp_path, imagewikiqa_file, capsys):
    with imagewikiqa_file.open("a") as handle:
        handle.write(json.dumps({"image": "images/val_1.JPEG", "text": "No options here?", "label": "A"}) + "\n")
        handle.write(
            json.dumps({"image": "images/missing.JPEG", "text": wikiqa_text("Q?", ["a", "b"]), "label": "A"}) + "\n"
        )
        handle.write(
            json.dumps({"image": "images/val_1.JPEG", "text": wikiqa_text("Q?", ["a", "b"]), "label": "D"}) + "\n"
        )
    with pytest.raises(RecordFormatError) as caught:
        adapt_file("imagewikiqa", imagewikiqa_file)
    missing = tmp_path / "images" / "missing.JPEG"
    assert str(caught.value).splitlines() == [
        f"{imagewikiqa_file}: 3 bad rows (pass skip_bad=True (--skip-bad) to skip them)",
        "  line 3: text has no lettered option lines ('A. ...', 'B. ...')",
        f"  line 4: image file 'images/missing.JPEG' cannot be read ({missing}): No such file or directory",
        "  line 5 (id 'imagewikiqa-5'): answer 'D' is not a letter of the options (A-B)",
    ]
    out = tmp_path / "wiki.parquet"
    assert main(["adapt", "imagewikiqa", "--input", str(imagewikiqa_file), "--out", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "2 questions; 3 bad rows skipped" in printed and "skipped line 3" in printed
    assert read_records(out).num_rows == 2


# -- VMCBench --------------------------------------------------------------------------------------

VMC_ROWS = [
    {
        "index": 7,
        "question": "What colour is it?",
        "A": "red",
        "B": "blue",
        "C": "green",
        "D": "black",
        "answer": "A",
        "category": "color",
    },
    {"index": 8, "question": "How many?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "D", "category": "count"},
]


def vmc_parquet(path):
    images = [{"bytes": RED, "path": None}, {"bytes": BLUE, "path": None}]
    pq.write_table(pa.Table.from_pylist([{**row, "image": image} for row, image in zip(VMC_ROWS, images)]), path)


def vmc_tsv(path):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*VMC_ROWS[0], "image"], delimiter="\t")
        writer.writeheader()
        for row, image in zip(VMC_ROWS, (RED, BLUE)):
            writer.writerow({**row, "image": base64.b64encode(image).decode()})


def vmc_jsonl(path):
    (path.parent / "a.png").write_bytes(RED)
    (path.parent / "b.png").write_bytes(BLUE)
    write_jsonl(path, [{**row, "image": name} for row, name in zip(VMC_ROWS, ("a.png", "b.png"))])


@pytest.mark.parametrize(
    ("name", "write"), [("dev.parquet", vmc_parquet), ("dev.tsv", vmc_tsv), ("dev.jsonl", vmc_jsonl)]
)
def test_vmcbench_formats(tmp_path, name, write):
    write(tmp_path / name)
    rows = adapt_file("vmcbench", tmp_path / name).table.to_pylist()
    assert [r["options"] for r in rows] == [["red", "blue", "green", "black"], ["1", "2", "3", "4"]]
    assert [r["answer"] for r in rows] == ["A", "D"] and [r["image"] for r in rows] == [RED, BLUE]
    assert [json.loads(r["meta"])["category"] for r in rows] == ["color", "count"]
    assert [r["id"] for r in rows] == ["vmcbench-7", "vmcbench-8"]


# -- MMMU ------------------------------------------------------------------------------------------


def mmmu_file(path):
    rows = [
        {"id": "validation_Art_1", "question": "<image 1> Which style is shown?", "options": "['Baroque', 'Gothic', 'Modern']", "answer": "B",  # noqa: E501 (a table row)
         "question_type": "multiple-choice", "subfield": "Art", "image_1": {"bytes": RED, "path": "a.png"}, "image_2": None},
        {"id": "validation_Art_2", "question": "Compare <image 1> and <image 2>. Which is older?", "options": "['<image 1>', '<image 2>']",
         "answer": "A", "question_type": "multiple-choice", "subfield": "Art", "image_1": {"bytes": RED, "path": "a.png"}, "image_2": {"bytes": BLUE, "path": "b.png"}},  # noqa: E501 (a table row)
        {"id": "validation_Math_3", "question": "Compute x.", "options": "[]", "answer": "42", "question_type": "open", "subfield": "Math",
         "image_1": None, "image_2": None},
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_mmmu_multiple_choice_only_with_every_image_and_placeholder(tmp_path):
    adapted = adapt_file("mmmu", mmmu_file(tmp_path / "validation.parquet"))
    assert adapted.excluded == {"open questions": 1} and adapted.rows == 2
    single, double = adapted.table.to_pylist()
    assert single["question"] == "<image 1> Which style is shown?" and single["options"] == [
        "Baroque",
        "Gothic",
        "Modern",
    ]
    assert single["image"] == RED and single["answer"] == "B" and single["extra_images"] == []
    assert double["question"] == "Compare <image 1> and <image 2>. Which is older?" and double["options"] == [
        "<image 1>",
        "<image 2>",
    ]
    assert (double["image"], double["extra_images"], double["kind"]) == (RED, [BLUE], "mcq")
    assert json.loads(double["meta"])["num_images"] == 2


def test_mmmu_cli_reports_skipped_open_questions(tmp_path, capsys):
    out = tmp_path / "mmmu-val.parquet"
    assert main(["adapt", "mmmu", "--input", str(mmmu_file(tmp_path / "validation.parquet")), "--out", str(out)]) == 0
    assert "2 questions; 1 open questions left out" in capsys.readouterr().out
    assert set(read_records(out).column("source").to_pylist()) == {"mmmu-val"}


def test_mmmu_bad_options_literal(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"id": "x1", "question": "Q?", "options": "['a', 'b'", "answer": "A", "question_type": "multiple-choice"}]
        ),
        path,
    )
    with pytest.raises(RecordFormatError, match=r"row 1 \(id 'x1'\): options is not a Python list literal"):
        adapt_file("mmmu", path)


def test_adapt_refuses_to_overwrite(tmp_path, imagewikiqa_file):
    out = tmp_path / "wiki.parquet"
    adapt("imagewikiqa", imagewikiqa_file, out)
    with pytest.raises(FileExistsError):
        adapt("imagewikiqa", imagewikiqa_file, out)
    assert adapt("imagewikiqa", imagewikiqa_file, out, overwrite=True).rows == 2
