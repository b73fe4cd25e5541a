"""Dataset registry (toy world cached by content hash, racing builders), suites and their hashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recipes.toyworld.world as toy_world_module
from recipes.data.registry import DatasetNotFoundError, dataset_name, load_dataset, registered_datasets, resolve_dataset
from recipes.data.stream import MixSource, build_train_stream
from recipes.data.suites import QUADRANTS, Suite, SuiteError, load_suite
from recipes.data.writers import write_records
from recipes.toyworld.datasets import toy_world_key
from recipes.toyworld.freeform import TOY_FREEFORM_NAMES
from recipes.toyworld.world import TOY_DATASET_NAMES, ToyWorldConfig
from tests.data_fixtures import mcq_record


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache; registered names resolve to the small toy world."""
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FORGETLESS_TOY_SIZE", "small")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def small_world_env(module_cache, monkeypatch):
    """A cache shared by this module's tests (the small toy world is built once for all of them)."""
    monkeypatch.setenv("FORGETLESS_CACHE", str(module_cache))
    monkeypatch.setenv("FORGETLESS_TOY_SIZE", "small")
    return module_cache


def test_registered_name_builds_the_toy_world_once(fresh_cache):
    path = resolve_dataset("toy-imagenet-vqa")
    assert path == fresh_cache / "toy-world" / toy_world_key(ToyWorldConfig(size="small")) / "toy-imagenet-vqa.parquet"
    modified = path.stat().st_mtime_ns
    assert resolve_dataset("toy-imagenet-vqa") == path and path.stat().st_mtime_ns == modified
    assert load_dataset("toy-imagenet-vqa").num_rows == 400
    assert all((path.parent / f"{name}.parquet").exists() for name in TOY_DATASET_NAMES)
    freeform = resolve_dataset("toy-chat")
    assert freeform.parent.parent == fresh_cache / "toy-freeform"
    assert all((freeform.parent / f"{name}.parquet").exists() for name in TOY_FREEFORM_NAMES)
    assert set(registered_datasets()) == {*TOY_DATASET_NAMES, *TOY_FREEFORM_NAMES}


def test_racing_processes_share_one_build(fresh_cache):
    script = "from recipes.toyworld.datasets import toy_world_dir; print(toy_world_dir())"
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(outputs) == 1
    built = Path(outputs.pop())
    assert sorted(p.name for p in (fresh_cache / "toy-world").iterdir() if not p.name.endswith(".lock")) == [built.name]
    assert len(list(built.glob("*.parquet"))) == len(TOY_DATASET_NAMES)


KEY_CHANGES = {
    "seed": ToyWorldConfig(seed=1),
    "size": ToyWorldConfig(size="small"),
    "image size": ToyWorldConfig(image_size=64),
    "pretrain mix": ToyWorldConfig(pretrain_shares=(("classify", 0.5), ("text-qa", 0.5))),
}


@pytest.mark.parametrize("config", KEY_CHANGES.values(), ids=KEY_CHANGES.keys())
def test_cache_key_follows_every_parameter(config):
    assert toy_world_key(config) != toy_world_key(ToyWorldConfig())
    assert toy_world_key(config) == toy_world_key(config)


def test_cache_key_follows_the_generator_version(monkeypatch):
    before = toy_world_key(ToyWorldConfig())
    monkeypatch.setattr(toy_world_module, "GENERATOR_VERSION", toy_world_module.GENERATOR_VERSION + 1)
    assert toy_world_key(ToyWorldConfig()) != before


def test_environment_chooses_the_world(monkeypatch):
    monkeypatch.setenv("FORGETLESS_TOY_SIZE", "small")
    monkeypatch.setenv("FORGETLESS_TOY_SEED", "3")
    assert toy_world_key() == toy_world_key(ToyWorldConfig(seed=3, size="small"))
    monkeypatch.setenv("FORGETLESS_TOY_SIZE", "giant")
    with pytest.raises(
        ValueError, match=r"size must be one of small, default, got 'giant' \(from \$FORGETLESS_TOY_SIZE"
    ):
        toy_world_key()


def test_paths_and_unknown_names(tmp_path):
    path = write_records([mcq_record(0)], tmp_path / "mine.parquet")
    assert resolve_dataset(path) == Path(path) and dataset_name(path) == "mine"
    assert dataset_name("toy-wiki") == "toy-wiki"
    with pytest.raises(
        DatasetNotFoundError,
        match=r"dataset 'imagenet-vqa' is neither a registered name nor an existing file; registered names: toy-imagenet-vqa, ",
    ):
        resolve_dataset("imagenet-vqa")


def test_train_stream_from_registered_names(small_world_env):
    stream = build_train_stream("toy-imagenet-vqa", 0.25, [MixSource("toy-general", 0.5)], seed=0)
    assert stream.tables[0].num_rows == 100 and stream.realized_ratios(0, 2000) == {
        "toy-imagenet-vqa": 0.5,
        "toy-general": 0.5,
    }


# -- suites ----------------------------------------------------------------------------------------


def test_toy_suite(small_world_env):
    suite = load_suite("toy")
    assert tuple(suite.quadrants) == QUADRANTS
    assert suite.quadrants["id_id"] == ["toy-imagenet-vqa-val", "toy-imagenet-vqa-v2"]
    assert suite.quadrants["ood_id"] == ["toy-attributes", "toy-wiki", "toy-wiki-classname"]
    assert set(suite.dataset_names().values()) <= set(registered_datasets())
    assert suite.content_hash() == load_suite("toy").content_hash()
    assert suite.load("toy-text-qa").num_rows == 40


@pytest.fixture
def user_suite(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_records([mcq_record(0, source=name)], tmp_path / "sets" / f"{name}.parquet")
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: mine\nquadrants:\n  id_id: [sets/a.parquet]\n  id_ood: [sets/b.parquet]\n  ood_id: [sets/c.parquet]\n  ood_ood: [sets/d.parquet, toy-text-qa]\n"  # noqa: E501 (a table row)
    )
    return path


def test_user_suite_paths_are_relative_to_the_file(user_suite):
    suite = load_suite(user_suite)
    assert suite.name == "mine"
    assert suite.quadrants["id_id"] == [str(user_suite.parent / "sets" / "a.parquet")]
    assert suite.quadrants["ood_ood"][1] == "toy-text-qa"
    assert suite.dataset_names()[str(user_suite.parent / "sets" / "b.parquet")] == "b"


def test_content_hash_follows_file_contents(user_suite):
    suite = Suite("mine", {q: [str(user_suite.parent / "sets" / f"{n}.parquet")] for q, n in zip(QUADRANTS, "abcd")})
    before = suite.content_hash()
    assert suite.content_hash() == before
    write_records([mcq_record(1, source="c")], user_suite.parent / "sets" / "c.parquet", overwrite=True)
    assert suite.content_hash() != before


SUITE_ERRORS = {
    "missing quadrant": ("name: s\nquadrants: {id_id: [a], id_ood: [b], ood_id: [c]}\n", "quadrants.ood_ood: missing"),
    "unknown quadrant": ("name: s\nquadrants: {id_id: [a], id_ood: [b], ood_id: [c], ood_ood: [d], extra: [e]}\n", "quadrants.extra: unknown quadrant"),  # noqa: E501 (a table row)
    "empty quadrant": ("name: s\nquadrants: {id_id: [], id_ood: [b], ood_id: [c], ood_ood: [d]}\n", r"quadrants.id_id: must be a non-empty list of datasets, got \[\]"),  # noqa: E501 (a table row)
    "not a list": ("name: s\nquadrants: {id_id: a, id_ood: [b], ood_id: [c], ood_ood: [d]}\n", "quadrants.id_id: must be a non-empty list of datasets, got 'a'"),  # noqa: E501 (a table row)
    "bad entry": ("name: s\nquadrants: {id_id: [3], id_ood: [b], ood_id: [c], ood_ood: [d]}\n", r"quadrants.id_id\[0\]: must be a dataset name or path, got 3"),  # noqa: E501 (a table row)
    "no name": ("quadrants: {id_id: [a], id_ood: [b], ood_id: [c], ood_ood: [d]}\n", "name: must be a non-empty string, got None"),
    "unknown key": ("name: s\nsuite: x\nquadrants: {id_id: [a], id_ood: [b], ood_id: [c], ood_ood: [d]}\n", "suite: unknown key"),
    "not a mapping": ("- a\n- b\n", "expected a mapping with keys name and quadrants, got list"),
    "not yaml": ("name: [unclosed\n", "not valid YAML"),
}  # fmt: skip


@pytest.mark.parametrize(("content", "message"), SUITE_ERRORS.values(), ids=SUITE_ERRORS.keys())
def test_suite_errors_name_file_and_key(tmp_path, content, message):
    path = tmp_path / "suite.yaml"
    path.write_text(content)
    with pytest.raises(SuiteError, match=f"{path}: .*{message}"):
        load_suite(path)


def test_suite_datasets_must_exist(user_suite):
    user_suite.write_text(user_suite.read_text().replace("sets/b.parquet", "sets/typo.parquet"))
    with pytest.raises(
        SuiteError,
        match=r"quadrants.id_ood\[0\]: no such dataset 'sets/typo.parquet' \(not a registered name; looked for .*sets/typo.parquet\)",
    ):
        load_suite(user_suite)


def test_unknown_suite_name():
    with pytest.raises(SuiteError, match="suite 'paper' is neither a named suite \\(toy\\) nor an existing YAML file"):
        load_suite("paper")
