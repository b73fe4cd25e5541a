"""The shipped toy base: the same weights and the same zero-shot accuracies on every machine.

``recipes/toyworld/shipped/toy-qwen2.5-vl`` is what ``toy-qwen2.5-vl`` resolves to when the toy world
it was pre-trained on is the one this code generates (``pretraining_inputs_key``). These tests check
that it still is (a change to the toy world, the prompts or the pre-training settings makes the
first one fail: rebuild with ``python -m recipes.toyworld pretrain --ship``), that its zero-shot
accuracies on the demo's toy suite are docs/toy-world.md's to the digit, that it knows the toy world
(above chance in every quadrant), that a damaged file is refused, and that the build cache finds a
model instead of rebuilding it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from contract import layout
from jobs.evaluate.suite_eval import SuiteEvaluator
from recipes.data.suites import QUADRANTS, load_suite
from recipes.models import load_model
from recipes.toyworld import base as toy_base
from recipes.toyworld.base import PretrainConfig, shipped_base, toy_model_dir
from recipes.toyworld.world import ToyWorldConfig

SHIPPED_ZERO_SHOT = {
    layout.accuracy_metric("id_id"): 51.0,
    layout.accuracy_metric("id_ood"): 55.75,
    layout.accuracy_metric("ood_id"): 73.5,
    layout.accuracy_metric("ood_ood"): 66.25,
}
"""The shipped base's quadrant accuracies (percent, two decimals) on the default toy suite: the
step-0 row of the tables in docs/toy-world.md."""
CHANCE = 0.25
"""Every toy question has four options."""
STANDARD_ERRORS = 3.0
"""How far above chance every quadrant must be, in standard errors of a guesser's accuracy on its
questions (a guesser gets there with probability ~0.1%)."""


def file_identities(directory: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file in ``directory``: a rebuild writes new files, a cache hit none."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in directory.iterdir()}


@pytest.fixture(scope="module")
def default_world():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGETLESS_TOY_SIZE", "default")  # the demo's world and suite
        yield


@pytest.fixture(scope="module")
def shipped_result(default_world):
    directory = toy_model_dir(pretrained=True)
    loaded = load_model(str(directory))
    suite = load_suite("toy")
    result = SuiteEvaluator(suite, loaded.processor, batch_size=64).evaluate(loaded.model)
    questions = {q: sum(suite.load(d).num_rows for d in suite.quadrants[q]) for q in QUADRANTS}
    return directory, result, questions


def test_the_shipped_base_was_built_from_this_toy_world(default_world):
    manifest = json.loads((toy_base.SHIPPED_BASE_DIR / toy_base.MANIFEST_NAME).read_text())
    identity = toy_base._shipped_identity(toy_base.ToyModelConfig(), PretrainConfig(), None)
    assert manifest["identity"] == identity, (
        "the toy world, prompts or pre-training settings changed since the base was shipped: "
        "run `python -m recipes.toyworld pretrain --ship` and commit the result"
    )
    assert shipped_base(identity) == toy_base.SHIPPED_BASE_DIR


def test_the_registered_base_is_the_shipped_one(shipped_result):
    directory, _, _ = shipped_result
    manifest = json.loads((toy_base.SHIPPED_BASE_DIR / toy_base.MANIFEST_NAME).read_text())
    for name, digest in manifest["files"].items():
        assert toy_base._file_sha256(directory / name) == digest, name


def test_zero_shot_accuracies_are_the_readmes_to_the_digit(shipped_result):
    _, result, _ = shipped_result
    assert {name: round(result.metrics[name], 2) for name in SHIPPED_ZERO_SHOT} == SHIPPED_ZERO_SHOT


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_the_base_is_above_chance_in_every_quadrant(shipped_result, quadrant):
    _, result, questions = shipped_result
    bar = 100 * (CHANCE + STANDARD_ERRORS * math.sqrt(CHANCE * (1 - CHANCE) / questions[quadrant]))
    assert result.quadrant(quadrant) >= bar, (round(bar, 1), result.metrics)


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch, default_world):
    damaged = tmp_path / "toy-qwen2.5-vl"
    shutil.copytree(toy_base.SHIPPED_BASE_DIR, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(toy_base, "SHIPPED_BASE_DIR", damaged)
    identity = toy_base._shipped_identity(toy_base.ToyModelConfig(), PretrainConfig(), None)
    with pytest.raises(RuntimeError, match="model.safetensors: sha256 .* is not the manifest's"):
        shipped_base(identity)


def test_a_built_base_is_found_not_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path))

    def build():
        return toy_model_dir(True, pretrain_config=PretrainConfig(steps=3), pretrain_world=ToyWorldConfig(size="small"))

    directory = build()
    built = file_identities(directory)
    assert '"steps": 3' in (directory / toy_base.PRETRAIN_REPORT_NAME).read_text()
    assert build() == directory
    assert file_identities(directory) == built, "the second request rebuilt the model instead of finding it"
