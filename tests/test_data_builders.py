"""ImageNet-VQA and class-folder builders, distractor selection, CLIP text similarity (tiny CLIP)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import recipes.adapters.class_folder as class_folder_module
from recipes.adapters.class_folder import ClassFolder, build_class_mcq, read_class_names
from recipes.adapters.imagenet_vqa import build_imagenet_vqa
from recipes.data.__main__ import main
from recipes.data.distractors import DistractorSampler, balanced_answer_positions, clip_text_similarity, layout_options
from recipes.data.prompts import CLASS_QUESTION
from recipes.data.readers import read_records
from recipes.data.schema import LETTERS, answer_index
from tests.data_fixtures import CLASS_NAMES, build_tiny_clip, write_class_folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_class_folder(tmp_path_factory.mktemp("images"), images_per_class=4)


# -- distractor pools ------------------------------------------------------------------------------

POOL_CASES = {
    "most similar first": (["a", "b", "c", "d"], [[1, 0.9, 0.1, 0.5], [0.9, 1, 0.2, 0.3], [0.1, 0.2, 1, 0.8], [0.5, 0.3, 0.8, 1]], 2, [(1, 3), (0, 3), (3, 1), (2, 0)]),  # noqa: E501 (a table row)
    "pool of one": (["a", "b", "c"], [[1, 0.2, 0.7], [0.2, 1, 0.4], [0.7, 0.4, 1]], 1, [(2,), (2,), (0,)]),
    "same-name classes never distract": (["crane", "crane", "heron", "bus"], [[1, 1, 0.9, 0.1], [1, 1, 0.2, 0.8], [0.9, 0.2, 1, 0], [0.1, 0.8, 0, 1]], 2, [(2, 3), (3, 2), (0, 1), (1, 0)]),  # noqa: E501 (a table row)
}  # fmt: skip


@pytest.mark.parametrize(("names", "similarity", "pool_size", "pools"), POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pools_are_the_most_similar_wrong_classes(names, similarity, pool_size, pools):
    sampler = DistractorSampler.from_similarity(names, np.array(similarity), pool_size=pool_size, seed=0)
    assert list(sampler.pools) == pools


def test_ties_are_broken_by_the_seed():
    names = [f"c{i}" for i in range(12)]
    similarity = np.ones((12, 12))
    pools = {
        seed: DistractorSampler.from_similarity(names, similarity, pool_size=5, seed=seed).pools for seed in range(4)
    }
    assert pools[0] == DistractorSampler.from_similarity(names, similarity, pool_size=5, seed=0).pools
    assert len(set(pools.values())) > 1


def test_uniform_sampler_uses_every_other_class():
    sampler = DistractorSampler.uniform(["a", "b", "c", "d", "e", "f"])
    rng = np.random.default_rng(0)
    seen = Counter(j for _ in range(300) for j in sampler.sample(0, 3, rng))
    assert set(seen) == {1, 2, 3, 4, 5}


def test_too_few_candidates_is_an_error():
    with pytest.raises(ValueError, match="has 2 distractor candidates, 3 needed"):
        DistractorSampler.from_similarity(["a", "b", "c"], np.eye(3), pool_size=5).sample(
            0, 3, np.random.default_rng(0)
        )


@pytest.mark.parametrize(("rows", "options"), [(4, 4), (40, 4), (41, 4), (7, 2), (1000, 5)])
def test_balanced_answer_positions(rows, options):
    counts = Counter(balanced_answer_positions(rows, options, np.random.default_rng(1)).tolist())
    assert max(counts.values()) - min(counts.get(p, 0) for p in range(options)) <= 1


def test_layout_puts_the_answer_at_its_position():
    options, letter = layout_options("cat", ["dog", "bird", "fish"], 2, np.random.default_rng(0))
    assert options[2] == "cat" and letter == "C" and sorted(options) == ["bird", "cat", "dog", "fish"]


# -- CLIP text similarity ---------------------------------------------------------------------------


def test_clip_text_similarity_is_a_cosine_matrix(clip_dir):
    similarity = clip_text_similarity(CLASS_NAMES, str(clip_dir))
    assert similarity.shape == (len(CLASS_NAMES), len(CLASS_NAMES))
    assert np.allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert np.allclose(similarity, similarity.T, atol=1e-6)
    assert np.all(similarity <= 1 + 1e-5) and len(np.unique(similarity.round(6))) > len(CLASS_NAMES)


# -- class folders ---------------------------------------------------------------------------------


def test_scan_reads_classes_and_files(image_folder):
    folder = ClassFolder.scan(image_folder)
    assert folder.class_names == tuple(sorted(CLASS_NAMES))
    assert len(folder.files) == 4 * len(CLASS_NAMES)
    assert folder.files[0] == ("blue_circle/0.png", 0)


NAME_FILES = {
    "imagenet synset mapping": ("names.txt", "n01 tench, Tinca tinca\nn02 goldfish, Carassius auratus\n", ["n01", "n02"], {"n01": "tench", "n02": "goldfish"}),  # noqa: E501 (a table row)
    "json object": ("names.json", '{"n01": "tench", "n02": "goldfish"}', ["n01", "n02"], {"n01": "tench", "n02": "goldfish"}),
    "json list for numbered dirs": ("names.json", '["tench", "goldfish"]', ["0", "1"], {"0": "tench", "1": "goldfish"}),
}  # fmt: skip


@pytest.mark.parametrize(("filename", "content", "dirs", "expected"), NAME_FILES.values(), ids=NAME_FILES.keys())
def test_class_name_files(tmp_path, filename, content, dirs, expected):
    (tmp_path / filename).write_text(content)
    assert read_class_names(tmp_path / filename, dirs) == expected


def test_names_file_must_cover_every_class(tmp_path, image_folder):
    (tmp_path / "names.json").write_text('{"red_circle": "red circle"}')
    with pytest.raises(ValueError, match=r"names\.json: no name for class dir\(s\) blue_circle"):
        ClassFolder.scan(image_folder, names_file=tmp_path / "names.json")


def test_class_list_and_files_list(tmp_path, image_folder):
    (tmp_path / "classes.txt").write_text("red_circle\nblue_square\n")
    (tmp_path / "files.txt").write_text(
        "red_circle/0.png red_circle\nblue_square/1.png blue_square\nred_circle/2.png red_circle\n"
    )
    folder = ClassFolder.from_lists(image_folder, tmp_path / "classes.txt", tmp_path / "files.txt")
    assert folder.class_names == ("red circle", "blue square")
    assert folder.files == (("red_circle/0.png", 0), ("blue_square/1.png", 1), ("red_circle/2.png", 0))
    (tmp_path / "files.txt").write_text("red_circle/0.png purple_cube\n")
    with pytest.raises(ValueError, match=r"files\.txt: line 1: expected '<path> <class id"):
        ClassFolder.from_lists(image_folder, tmp_path / "classes.txt", tmp_path / "files.txt")


# -- ImageNet-VQA ----------------------------------------------------------------------------------


def test_imagenet_vqa_uses_clip_top5_distractors(tmp_path, image_folder, clip_dir, monkeypatch):
    calls = []
    real = class_folder_module.clip_text_similarity
    monkeypatch.setattr(class_folder_module, "clip_text_similarity", lambda *a, **k: calls.append(a) or real(*a, **k))
    rows = build_imagenet_vqa(image_folder, str(clip_dir), tmp_path / "vqa.parquet", seed=3)
    assert len(calls) == 1  # the class similarity matrix is computed once, not per image
    table = read_records(tmp_path / "vqa.parquet")
    assert rows == table.num_rows == 4 * len(CLASS_NAMES)
    folder = ClassFolder.scan(image_folder)
    similarity = clip_text_similarity(folder.class_names, str(clip_dir))
    for row in table.to_pylist():
        meta = json.loads(row["meta"])
        true = folder.class_names.index(meta["classname"])
        scores = similarity[true].copy()
        scores[true] = -np.inf
        top5 = {folder.class_names[j] for j in np.argsort(-scores)[:5]}
        assert row["question"] == CLASS_QUESTION
        assert row["options"][answer_index(row)] == meta["classname"]
        assert len(row["options"]) == 4 and len(set(row["options"])) == 4
        assert set(row["options"]) - {meta["classname"]} <= top5
        assert row["image"] == (image_folder / meta["file"]).read_bytes()


def test_imagenet_vqa_is_deterministic_given_the_seed(tmp_path, image_folder, clip_dir):
    def build(name: str, seed: int) -> list[dict]:
        build_imagenet_vqa(image_folder, str(clip_dir), tmp_path / name, seed=seed, source="imagenet-vqa")
        return read_records(tmp_path / name).to_pylist()

    first, again, other_seed = build("a.parquet", 0), build("b.parquet", 0), build("c.parquet", 1)
    assert first == again
    assert [r["options"] for r in first] != [r["options"] for r in other_seed]


def test_answer_letters_are_balanced(tmp_path, clip_dir):
    folder = write_class_folder(tmp_path / "many", images_per_class=20)
    build_class_mcq(ClassFolder.scan(folder), tmp_path / "out.parquet", clip_path=str(clip_dir))
    counts = Counter(read_records(tmp_path / "out.parquet").column("answer").to_pylist())
    assert set(counts) == set(LETTERS[:4]) and max(counts.values()) - min(counts.values()) <= 1


def test_imagenet_vqa_cli(tmp_path, image_folder, clip_dir, capsys):
    out = tmp_path / "cli.parquet"
    assert (
        main(["imagenet-vqa", "--images", str(image_folder), "--clip", str(clip_dir), "--out", str(out), "--seed", "5"])
        == 0
    )
    assert f"{out}: 28 questions" in capsys.readouterr().out
    assert main(["imagenet-vqa", "--images", str(image_folder), "--clip", str(clip_dir), "--out", str(out)]) == 2
    assert "already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err


@pytest.mark.parametrize("use_clip", [False, True], ids=["random distractors", "clip distractors"])
def test_class_folder_adapter(tmp_path, image_folder, clip_dir, use_clip, capsys):
    out = tmp_path / "flowers.parquet"
    argv = ["adapt", "class-folder", "--input", str(image_folder), "--out", str(out), "--seed", "2"]
    assert main(argv + (["--clip", str(clip_dir)] if use_clip else [])) == 0
    table = read_records(out)
    assert table.num_rows == 28 and set(table.column("question").to_pylist()) == {"What is this?"}
    assert set(table.column("source").to_pylist()) == {"flowers"}
    assert "28 questions" in capsys.readouterr().out
