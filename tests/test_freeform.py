"""Free-form records next to MCQ ones: the contract, its storage and its bad-row reporting."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from contract import layout
from recipes.data.readers import read_records, read_records_report
from recipes.data.schema import (
    MCQ_SCHEMA,
    RECORD_SCHEMA,
    RecordFormatError,
    concat_records,
    row_history,
    row_images,
    row_kind,
)
from recipes.data.summary import summarize
from recipes.data.writers import write_records
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
    table = read_records(write_records(records, tmp_path / "mixed.parquet"))
    assert table.schema == RECORD_SCHEMA
    mcq, freeform = table.to_pylist()
    assert (row_kind(mcq), row_kind(freeform)) == ("mcq", "freeform")
    assert row_images(freeform) == [png_bytes((200, 0, 0)), png_bytes((0, 0, 200))]
    assert row_history(freeform)[1] == {"role": "assistant", "text": "a red square"}
    assert mcq["matcher"] is None and mcq["history"] == [] and mcq["extra_images"] == []


def test_plain_mcq_files_keep_the_mcq_schema(tmp_path):
    path = write_records([mcq_record(0)], tmp_path / "plain.parquet")
    assert pq.read_schema(path).names == list(MCQ_SCHEMA.names)
    assert read_records(path).schema == MCQ_SCHEMA


def test_mcq_and_freeform_tables_concatenate(tmp_path):
    plain = read_records(write_records([mcq_record(0)], tmp_path / "a.parquet"))
    mixed = read_records(write_records([freeform_record(1)], tmp_path / "b.parquet"))
    joined = concat_records([plain, mixed])
    assert joined.schema == RECORD_SCHEMA and [row_kind(r) for r in joined.to_pylist()] == ["mcq", "freeform"]


def test_jsonl_freeform_rows_need_no_options(tmp_path):
    path = tmp_path / "chat.jsonl"
    row = {"id": "c1", "kind": "freeform", "question": "Say hi.", "answer": "hi", "matcher": "exact"}
    path.write_text(json.dumps(row) + "\n")
    [read] = read_records(path).to_pylist()
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
    with pytest.raises(RecordFormatError) as error:
        write_records([mcq_record(0), freeform_record(1, **changes)], tmp_path / "bad.parquet")
    assert "row 2 (id 'f1')" in str(error.value) and expected in str(error.value)
    assert not (tmp_path / "bad.parquet").exists()


def test_bad_freeform_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [
        freeform_record(0, image=None, extra_images=[]),
        freeform_record(1, image=None, extra_images=[], matcher="?"),
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = read_records_report(path, skip_bad=True)
    assert report.table.num_rows == 1 and report.skipped[0].describe().startswith("line 2 (id 'f1'): matcher '?'")


def test_inspect_counts_kinds_matchers_and_images():
    from recipes.data.schema import records_to_table

    text = summarize(records_to_table([mcq_record(0), freeform_record(1)]), samples=2)
    assert "kinds: mcq 1, freeform 1" in text and "matchers: exact 1" in text
    assert "rows with several images: 1" in text and "  assistant: a red square" in text


# -- adapters on files in the public layouts -------------------------------------------------------

from recipes.adapters.formats import adapt_file  # noqa: E402
from recipes.adapters.rows import split_inline_options  # noqa: E402
from recipes.data.__main__ import main as data_main  # noqa: E402

MLLM_CL_DOMAINS = {
    # domain: (train rows, test rows) in MLLM-CL's layout: LLaVA conversations / question_id, text, answer
    "RS": (
        [{"id": "rs1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many airplanes are in the image?"}, {"from": "gpt", "value": "3"}]}],
        [{"question_id": 1, "image": "images/a.png", "text": "Is there a river?\nAnswer the question using a single word or phrase.", "answer": "no"}],  # noqa: E501 (a table row)
    ),
    "Med": (
        [{"id": "m1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich organ is abnormal?"}, {"from": "gpt", "value": "lung"}]}],
        [{"question_id": 2, "image": "images/a.png", "text": "What modality is this?\nA. CT\nB. MRI", "answer": "A"}],
    ),
    "AD": (
        [{"id": "d1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat should the ego car do? Options: A. Going ahead. B. Turning left. C. Stopping."},
            {"from": "gpt", "value": "C. Stopping."}]}],
        [{"question_id": 3, "image": "images/a.png", "text": "What is the status of the traffic light?", "answer": "green"}],
    ),
    "Sci": (
        [{"id": "s1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich states border Texas?"}, {"from": "gpt", "value": "Oklahoma, New Mexico"}]},
         {"id": "s2", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich is a producer?\nA. grass\nB. fox"}, {"from": "gpt", "value": "A"}]}],
        [{"question_id": 4, "image": "images/a.png", "text": "What label marks the root?", "answer": "F"}],
    ),
    "Fin": (
        [{"id": "f1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the closing price trend?"}, {"from": "gpt", "value": "rise"}]}],
        [{"question_id": 5, "image": "images/a.png", "text": "Will the stock go up?\nA. yes\nB. no", "answer": "yes"}],
    ),
}  # fmt: skip


def write_mllm_cl(root):
    """root/<Domain>/{train,test}.json and root/<Domain>/images/a.png, as MLLM-CL ships them."""
    for domain, (train, test) in MLLM_CL_DOMAINS.items():
        (root / domain / "images").mkdir(parents=True)
        (root / domain / "images" / "a.png").write_bytes(png_bytes())
        (root / domain / "train.json").write_text(json.dumps(train))
        (root / domain / "test.json").write_text(json.dumps(test))
    return root


@pytest.mark.parametrize("domain", list(MLLM_CL_DOMAINS))
def test_mllm_cl_keeps_every_row_of_every_domain(tmp_path, domain, capsys):
    root = write_mllm_cl(tmp_path)
    matcher = {"RS": "rs", "Med": "med", "AD": "ad", "Sci": "sci", "Fin": "fin"}[domain]
    for split in ("train", "test"):
        source_rows = MLLM_CL_DOMAINS[domain][0 if split == "train" else 1]
        out = tmp_path / f"{domain}-{split}.parquet"
        argv = ["adapt", "mllm-cl", "--input", str(root / domain / f"{split}.json"), "--out", str(out)]
        assert data_main(argv) == 0
        rows = read_records(out).to_pylist()
        assert len(rows) == len(source_rows)
        kinds = [row_kind(row) for row in rows]
        assert f"({kinds.count('mcq')} mcq, {kinds.count('freeform')} freeform)" in capsys.readouterr().out
        assert all(row["matcher"] == matcher for row in rows if row_kind(row) == "freeform")
        assert all(row["image"] is not None for row in rows)


def test_mllm_cl_inline_options_become_mcq(tmp_path):
    root = write_mllm_cl(tmp_path)
    [row] = adapt_file("mllm-cl", root / "AD" / "train.json").table.to_pylist()
    assert row["question"] == "What should the ego car do?"
    assert (row["options"], row["answer"]) == (["Going ahead.", "Turning left.", "Stopping."], "C")


INLINE = {
    "options colon": ("Q? Options: A. yes B. no", ("Q?", ["yes", "no"], "")),
    "choices, parentheses": ("Pick. Choices: (A) red car (B) blue car\nBe brief.", ("Pick.", ["red car", "blue car"], "Be brief.")),
    "letters inside option text": ("Q? Options: A. Plan A. B. Plan B.", ("Q?", ["Plan A.", "Plan B."], "")),
}  # fmt: skip


@pytest.mark.parametrize("case", INLINE, ids=list(INLINE))
def test_split_inline_options(case):
    text, expected = INLINE[case]
    assert split_inline_options(text) == expected


def test_mllm_cl_without_a_known_domain_says_so(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(MLLM_CL_DOMAINS["RS"][0]))
    with pytest.raises(ValueError, match="cannot tell the MLLM-CL domain.*--domain"):
        adapt_file("mllm-cl", tmp_path / "train.json", image_root=str(tmp_path))


LLAVA_665K = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "text-only-1", "conversations": [
        {"from": "human", "value": "Write a haiku about rain."}, {"from": "gpt", "value": "Soft rain on the roof"}]},
    {"id": "two-images", "image": ["coco/train2017/000000033471.jpg", "coco/b.png"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhich picture is brighter?"}, {"from": "gpt", "value": "The second."}]},
]  # fmt: skip


def test_llava_instruct_conversations(tmp_path):
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "train2017" / "000000033471.jpg").write_bytes(png_bytes((10, 10, 10)))
    (tmp_path / "coco" / "b.png").write_bytes(png_bytes((250, 250, 250)))
    (tmp_path / "llava_v1_5_mix665k.json").write_text(json.dumps(LLAVA_665K))
    out = tmp_path / "llava.parquet"
    assert (
        data_main(["adapt", "llava-instruct", "--input", str(tmp_path / "llava_v1_5_mix665k.json"), "--out", str(out)])
        == 0
    )
    chat, text_only, two = read_records(out).to_pylist()
    assert chat["history"] == [
        {"role": "user", "text": "<image>\nWhat are the colors of the bus in the image?"},
        {"role": "assistant", "text": "The bus in the image is white and red."},
    ]
    assert (chat["question"], chat["answer"]) == (
        "What feature can be seen on the back of the bus?",
        "The back of the bus features an advertisement.",
    )
    assert text_only["image"] is None and text_only["history"] == [] and text_only["matcher"] == "exact"
    assert len(row_images(two)) == 2 and two["id"] == "llava-two-images"


LLAVA_BAD = {
    "gpt first": ([{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}], "conversations[0].from is 'gpt'"),
    "ends with human": ([{"from": "human", "value": "x"}], "must end with a gpt turn"),
    "unknown speaker": ([{"from": "bot", "value": "x"}, {"from": "gpt", "value": "y"}], "conversations[0].from is 'bot'"),
    "placeholder without image": ([{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}], "image placeholder(s) but no image"),  # noqa: E501 (a table row)
}  # fmt: skip


@pytest.mark.parametrize("case", LLAVA_BAD, ids=list(LLAVA_BAD))
def test_llava_instruct_bad_rows_name_the_item(tmp_path, case):
    turns, expected = LLAVA_BAD[case]
    (tmp_path / "chat.json").write_text(
        json.dumps(
            [{"id": "ok", "conversations": LLAVA_665K[1]["conversations"]}, {"id": "x9", "conversations": turns}]
        )
    )
    with pytest.raises(RecordFormatError) as error:
        adapt_file("llava-instruct", tmp_path / "chat.json")
    assert "chat.json" in str(error.value) and "item 2" in str(error.value) and expected in str(error.value)


def test_vqa_jsonl_and_zero_rows(tmp_path, capsys):
    (tmp_path / "img.png").write_bytes(png_bytes())
    rows = [
        {
            "question_id": "ocr-1",
            "image": "img.png",
            "question": "Who wrote this book?",
            "answers": ["Jane Doe", "J. Doe"],
        },
        {"id": "ocr-2", "image": "img.png", "question": "What is the title?", "answer": "Rain"},
    ]
    (tmp_path / "ocrvqa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    adapted = adapt_file("vqa", tmp_path / "ocrvqa.jsonl", matcher="med")
    assert [r["answer"] for r in adapted.table.to_pylist()] == ["Jane Doe", "Rain"]
    assert adapted.kinds == {"mcq": 0, "freeform": 2} and set(adapted.table.column("matcher").to_pylist()) == {"med"}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x", "question": "Q?"}) + "\n")
    argv = ["adapt", "vqa", "--input", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.parquet"), "--skip-bad"]
    assert data_main(argv) == 2
    assert "has no rows left to write (1 bad rows skipped)" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


# -- collation: images in place, assistant-only labels ---------------------------------------------

import torch  # noqa: E402

from recipes.data.collate import IGNORE_INDEX, RecordCollator, place_images  # noqa: E402
from tests.tiny_models import mcq_row, tiny_qwen  # noqa: E402

PLACEMENTS = {
    "no placeholder: image first": (["Q?"], 1, [[{"type": "image"}, {"type": "text", "text": "Q?"}]], [0]),
    "llava <image> line": (["<image>\nQ?"], 1, [[{"type": "image"}, {"type": "text", "text": "Q?"}]], [0]),
    "numbered, out of order": (
        ["Is <image 2> older than <image 1>?"], 2,
        [[{"type": "text", "text": "Is "}, {"type": "image"}, {"type": "text", "text": " older than "},
          {"type": "image"}, {"type": "text", "text": "?"}]], [1, 0]),
    "second turn names the second image": (
        ["<image>\nWhat is it?", "And <image>?"], 2,
        [[{"type": "image"}, {"type": "text", "text": "What is it?"}],
         [{"type": "text", "text": "And "}, {"type": "image"}, {"type": "text", "text": "?"}]], [0, 1]),
    "text-only": (["Hello"], 0, [[{"type": "text", "text": "Hello"}]], []),
}  # fmt: skip


@pytest.mark.parametrize("case", PLACEMENTS, ids=list(PLACEMENTS))
def test_images_go_where_their_placeholders_are(case):
    texts, count, contents, order = PLACEMENTS[case]
    assert place_images(texts, count) == (contents, order)


def label_runs(batch, tokenizer) -> list[list[str]]:
    """Per row, the decoded runs of consecutive labelled positions (checking labels equal the input ids)."""
    runs = []
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        assert torch.equal(labels[kept], ids[kept])
        groups, current = [], []
        for position in kept:
            if current and position != current[-1] + 1:
                groups.append(current)
                current = []
            current.append(position)
        groups.append(current)
        runs.append([tokenizer.decode(ids[group]) for group in groups if group])
    return runs


def test_labels_cover_exactly_the_assistant_turns():
    processor = tiny_qwen()[1]
    tokenizer = processor.tokenizer
    single = freeform_record(1, history=[], question="What is <image 2>?")
    rows = [mcq_row(0, answer="C"), single, freeform_record(2)]
    batch = RecordCollator(processor, with_answers=True)(rows)
    assert label_runs(batch, tokenizer) == [
        ["C<|im_end|>"],
        ["a blue square<|im_end|>"],
        ["a red square<|im_end|>", "a blue square<|im_end|>"],
    ]
    assistant_prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        starts = [p for p in range(1, len(ids)) if labels[p] != IGNORE_INDEX and labels[p - 1] == IGNORE_INDEX]
        assert all(ids[p - len(assistant_prompt) : p] == assistant_prompt for p in starts)
    assert batch["image_grid_thw"].shape[0] == 1 + 2 + 2  # every image of every row


def test_evaluation_prompt_of_a_conversation_ends_before_its_answer():
    collate = RecordCollator(tiny_qwen()[1], padding_side="left")
    prompt = collate.prompt_text(freeform_record(0))
    assert prompt.count("<|vision_start|>") == 2 and "a red square<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n") and "a blue square" not in prompt


def test_one_image_families_name_the_row_with_several():
    from tests.test_collate import llava_processor

    with pytest.raises(ValueError, match=r"row 'f3' \(fixture\) has 2 images.*LlavaProcessor.*at most 1"):
        RecordCollator(llava_processor(), with_answers=True)([mcq_row(0), freeform_record(3)])


# -- scoring LLaMA-Factory's generated_predictions.jsonl -------------------------------------------

# Hand-checked against Listing 2 (RS/AD): 3 right of 5, one skipped but counted -> 60.00%
RS_PREDICTIONS = [
    ({"predict": "3", "label": "3"}, "no space on either side: '3' in '3' -> right"),
    ({"predict": "There is an airplane.", "label": "airplane"}, "' airplane' in the prediction -> right"),
    ({"predict": "Unanswerable", "label": "no"}, "skipped, still in the denominator"),
    ({"predict": "a parking lot near the road", "label": "parking lot"}, "label with a space is a substring -> right"),
    ({"predict": "no", "label": "yes"}, "wrong"),
]


def write_predictions(path, items):
    prompt = "system\nYou are a helpful assistant.\nuser\n<image>Question?\nassistant\n"
    path.write_text("".join(json.dumps({"prompt": prompt, **item}) + "\n" for item in items))
    return path


def test_score_command_reproduces_the_listing_accuracy(tmp_path, capsys):
    from jobs.evaluate.__main__ import main as evaluate_main

    path = write_predictions(tmp_path / "generated_predictions.jsonl", [item for item, _ in RS_PREDICTIONS])
    assert evaluate_main(["score", "--predictions", str(path), "--matcher", "rs"]) == 0
    assert "60.00% (3 of 5 right, matcher rs, 1 skipped)" in capsys.readouterr().out
    assert evaluate_main(["score", "--predictions", str(path), "--matcher", "med"]) == 0
    # Listing 3: the label is a substring: "3", "airplane", "parking lot"; "no" skipped; "yes" not in "no"
    assert "60.00%" in capsys.readouterr().out


def test_score_command_names_the_bad_line(tmp_path, capsys):
    from jobs.evaluate.__main__ import main as evaluate_main

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"predict": "a", "label": "a"}) + "\n" + json.dumps({"predict": "a"}) + "\n")
    assert evaluate_main(["score", "--predictions", str(path), "--matcher", "exact"]) == 2
    assert "p.jsonl: line 2: field label is missing" in capsys.readouterr().err
    assert evaluate_main(["score", "--predictions", str(path), "--matcher", "sci"]) == 2
    assert "line 1: field prompt is missing" in capsys.readouterr().err


# -- toy world: free-form tasks, conversations, mixing, a free-form continual domain ----------------

from recipes.data.continual import resolve_task, stage_training_table  # noqa: E402
from recipes.data.registry import load_dataset  # noqa: E402
from recipes.data.stream import MixSource, build_train_stream  # noqa: E402


def test_toy_freeform_datasets_are_registered_and_deterministic():
    from recipes.toyworld.freeform import toy_freeform_records
    from recipes.toyworld.world import ToyWorldConfig

    count = load_dataset("toy-count-free").to_pylist()
    assert {row["question"] for row in count} == {"How many shapes are there? Answer with a number."}
    assert {row["answer"] for row in count} == {"1", "2", "3", "4"} and {row["matcher"] for row in count} == {"rs"}
    chat = load_dataset("toy-chat").to_pylist()
    assert all(len(row["history"]) == 2 and row["matcher"] == "exact" for row in chat)
    config = ToyWorldConfig(size="small")
    assert toy_freeform_records("toy-chat", config) == toy_freeform_records("toy-chat", config)


def test_training_stream_mixes_mcq_and_conversations_by_share():
    stream = build_train_stream(
        "toy-imagenet-vqa", 1.0, [MixSource("toy-general", 0.15), MixSource("toy-chat", 0.15)], seed=0
    )
    shares = stream.realized_ratios(0, 2000)
    assert shares == {"toy-imagenet-vqa": 0.7, "toy-general": 0.15, "toy-chat": 0.15}
    rows = stream.rows(0, 64)
    assert {row_kind(row) for row in rows} == {"mcq", "freeform"}
    assert rows == stream.rows(0, 64)  # resumable: a position's sample never changes
    batch = RecordCollator(tiny_qwen()[1], with_answers=True)(rows[:16])
    assert (batch["labels"] != IGNORE_INDEX).any(dim=1).all()


def test_continual_stage_with_a_freeform_domain_replays_mcq_rows():
    tasks = [resolve_task(name) for name in ("toy-cl-shapes", "toy-cl-count")]
    table = stage_training_table(tasks, stage=1, per_task=20, seed=0)
    kinds = [row_kind(row) for row in table.to_pylist()]
    assert kinds.count("mcq") == 20 and kinds.count("freeform") == table.num_rows - 20
    assert tasks[1].test == "toy-count-free"


# -- one real trial: MCQ + conversation batches, a free-form dataset in the suite ------------------


def test_trial_trains_on_mixed_batches_and_scores_a_freeform_dataset(tmp_path, tracking_uri, ray_cluster):
    import yaml

    from jobs.trial import run_trial
    from tests.conftest import metric_steps
    from tests.test_finetune import make_trial

    suite = {
        "name": "mixed",
        "quadrants": {
            "id_id": ["toy-imagenet-vqa-val"],
            "id_ood": ["toy-count-free"],
            "ood_id": ["toy-wiki"],
            "ood_ood": ["toy-text-qa"],
        },
        "max_new_tokens": {"toy-count-free": 4},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    trial = make_trial(
        tmp_path,
        tracking_uri,
        steps=2,
        eval_every=2,
        micro_batch_size=8,
        mix=(MixSource("toy-chat", 0.5),),
        eval_suite=str(tmp_path / "suite.yaml"),
    )
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    for key in (layout.dataset_metric("toy-count-free"), layout.accuracy_metric("id_ood"), layout.TRAIN_LOSS):
        assert 2 in metric_steps(tracking_uri, outcome.run_id, key), key


def test_continual_toy_sequence_with_a_freeform_domain(tmp_path, tracking_uri, ray_cluster):
    from mlflow.tracking import MlflowClient

    from jobs.finetune.config import TrialConfig
    from jobs.trial import run_trial
    from tests.conftest import metric_steps

    trial = TrialConfig(
        model="toy-qwen2.5-vl-init", parts="llm", lr=1e-3, method="lora", lora_r=4, lora_alpha=8,
        batch_size=8, micro_batch_size=8, warmup_ratio=0.0, zero_stage=0, eval_batch_size=64,
        continual_tasks=("toy-cl-shapes", "toy-cl-count"), continual_epochs=(0.05, 0.2), replay_per_task=4,
        storage=str(tmp_path / "storage"), tracking_uri=tracking_uri, experiment=f"test-{tmp_path.name}",
    )  # fmt: skip
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    assert (
        len(metric_steps(tracking_uri, outcome.run_id, layout.task_accuracy_metric("toy-cl-count"))) == 3
    )  # zero-shot, after each task
    metrics = MlflowClient(tracking_uri).get_run(outcome.run_id).data.metrics
    assert {layout.task_last_metric("toy-cl-count"), layout.CONTINUAL_AVERAGE} <= set(metrics)
    assert 0.0 <= metrics[layout.task_last_metric("toy-cl-count")] <= 100.0


def test_suite_budgets_name_their_dataset(tmp_path):
    import yaml

    from recipes.data.suites import SuiteError, load_suite

    quadrants = {q: ["toy-count-free"] if q == "id_ood" else ["toy-wiki"] for q in layout.QUADRANTS}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "quadrants": quadrants, "max_new_tokens": {"toy-count-free": 4}}))
    assert load_suite(path).max_new_tokens == {"toy-count-free": 4}
    path.write_text(yaml.safe_dump({"name": "s", "quadrants": quadrants, "max_new_tokens": {"toy-chat": 0}}))
    with pytest.raises(SuiteError, match=r"suite\.yaml.*max_new_tokens\.toy-chat: not a dataset of the suite"):
        load_suite(path)


def test_sweep_refuses_rows_with_more_images_than_the_model_family_takes(tmp_path, monkeypatch):
    import orchestrator.sweep as sweep
    from jobs.finetune.config import TrialConfig
    from recipes.models.families import LLAVA, QWEN2_5_VL

    data = write_records([mcq_record(0), freeform_record(1)], tmp_path / "two-images.parquet")
    trial = TrialConfig(model="some-llava", parts="llm", lr=1e-5, mix=(MixSource(str(data), 0.2),),
                        storage=str(tmp_path), tracking_uri="sqlite:///x.db", experiment="e")  # fmt: skip
    monkeypatch.setattr(sweep, "model_family", lambda name: LLAVA)
    with pytest.raises(RecordFormatError, match=r"two-images\.parquet: row 2 \(id 'f1'\) has 2 images, but model "
                                             r"'some-llava' \(llava\) takes at most 1 per row"):  # fmt: skip
        sweep.check_data([trial])
    monkeypatch.setattr(sweep, "model_family", lambda name: QWEN2_5_VL)
    sweep.check_data([trial])
