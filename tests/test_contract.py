"""The MLflow layout has one home: ``contract.layout`` spells it, every other module imports it.

Checks the source of every package (no layout string written outside the contract) and that
the analysis refuses a sweep logged with another layout version instead of misreading it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from analysis.mlflow_reader import load_sweep
from contract import layout
from jobs.finetune.config import TrialConfig
from recipes.data.stream import MixSource
from tests.synthetic_sweeps import SyntheticTrial, log_sweep

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "benchmarks", "jobs", "orchestrator", "recipes", "tests")
"""Every folder of Python code but ``contract`` itself."""
METRIC_PREFIXES = (
    layout.DATASET_ACCURACY_PREFIX,
    layout.QUADRANT_DELTA_PREFIX.split("/")[0] + "/",
    layout.QUADRANT_STDERR_PREFIX.split("/")[0] + "/",
    layout.CONTINUAL_PREFIX,
    layout.INTERPOLATION_PREFIX,
    layout.SIGNAL_PREFIX,
    layout.SIGNAL_TIME_PREFIX,
    *{
        name.split("/")[0] + "/"
        for name in (layout.SEARCH_ID_GAIN, layout.TRAIN_LOSS, layout.TIME_EVAL_S, layout.TRAINABLE_PARAMETERS)
    },
    *{layout.predictions_artifact(0).split("/")[0] + "/", layout.MATRIX_ARTIFACT.split("/")[0] + "/"},
)
"""First segments of every metric name and artifact folder of the layout."""
TAGS = {value for name, value in vars(layout).items() if name.endswith("_TAG") and "." in value}
"""The namespaced tags (``sweep`` and ``trial_id`` are also param and field names)."""
PARAMS = {value for name, value in vars(layout).items() if name.startswith("PARAM_")}
"""Param keys: a string literal may not name one where params are read (``params[...]``, ``.get``, ``in``)."""
ARTIFACTS = {layout.TRIALS_ARTIFACT, layout.MATRIX_ARTIFACT}
"""Artifact names (``grid.yaml`` is also what users call their grid files, so it is not among them)."""
QUADRANT_TUPLES = {layout.QUADRANTS, layout.OOD_QUADRANTS}
ALLOWED = {"tests/test_contract.py"}
"""Files that spell layout strings on purpose (this test's own samples)."""


def _names_params(node: ast.AST) -> bool:
    """Whether an expression is a params mapping by its name (``params``, ``run.data.params``, ``trial.params``)."""
    text = ast.unparse(node)
    return text.split(".")[-1].split("(")[0].endswith("params")


def _param_key_literals(tree: ast.AST) -> list[ast.Constant]:
    """String literals used as a key into a params mapping."""
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _names_params(node.value):
            keys.append(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop")
            and _names_params(node.func.value)
            and node.args
        ):
            keys.append(node.args[0])
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if any(_names_params(right) for right in node.comparators):
                keys.append(node.left)
    return [key for key in keys if isinstance(key, ast.Constant) and isinstance(key.value, str)]


def layout_spellings(path: Path) -> list[str]:
    """``file:line text`` for every string of the layout that the code (not a docstring) writes: tags, metric
    names and artifact paths anywhere, param keys where params are read, and the quadrant tuples."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in TAGS or node.value in ARTIFACTS or node.value.startswith(METRIC_PREFIXES):
                found.append(f"{where}:{node.lineno} {node.value!r}")
            elif any(f"`{tag}`" in node.value for tag in TAGS):  # a tag inside a search filter
                found.append(f"{where}:{node.lineno} filter {node.value!r}")
        elif isinstance(node, ast.Tuple) and all(isinstance(item, ast.Constant) for item in node.elts):
            if tuple(item.value for item in node.elts) in QUADRANT_TUPLES:
                found.append(f"{where}:{node.lineno} quadrant tuple")
    found += [f"{where}:{key.lineno} param {key.value!r}" for key in _param_key_literals(tree) if key.value in PARAMS]
    return found


def test_no_module_outside_the_contract_spells_the_layout():
    found = [
        spelling
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in ALLOWED
        for spelling in layout_spellings(path)
    ]
    assert found == []


def test_the_check_finds_a_spelled_out_name(tmp_path: Path):
    module = tmp_path / "sample.py"
    module.write_text(
        '"""Docstring naming forgetless.kind is fine."""\nTAGS = {"forgetless.kind": "trial"}\n'
        'NAME = f"acc/q/{1}"\nQ = ("id_ood", "ood_id", "ood_ood")\n'
        'S = "stderr/q/id_id", "search/id_gain", "wiseft/0.5/acc/q/id_id", "trials.csv"\n'
        'lr = run.data.params["lr"]; tasks = params.get("continual_tasks"); ok = "mix_ratio" in trial.params\n'
        'cell = {"lr": 1.0}; fine = cell["lr"]\n'
        "runs = client.search_runs([e], f\"tags.`forgetless.kind` = 'trial'\")\n"
    )
    assert sorted(layout_spellings(module)) == [
        "sample.py:2 'forgetless.kind'",
        "sample.py:3 'acc/q/'",
        "sample.py:4 quadrant tuple",
        "sample.py:5 'search/id_gain'",
        "sample.py:5 'stderr/q/id_id'",
        "sample.py:5 'trials.csv'",
        "sample.py:5 'wiseft/0.5/acc/q/id_id'",
        "sample.py:6 param 'continual_tasks'",
        "sample.py:6 param 'lr'",
        "sample.py:6 param 'mix_ratio'",
        "sample.py:8 filter \"tags.`forgetless.kind` = 'trial'\"",
    ]


def test_every_param_a_trial_logs_is_a_setting_or_in_the_contract():
    """A trial run's params are its settings under their own names plus the contract's derived params."""
    settings = set(TrialConfig.model_fields)
    trials = [
        TrialConfig(model="toy-qwen2.5-vl", parts="llm", lr=1e-5),
        TrialConfig(model="toy-qwen2.5-vl", parts="llm", lr=1e-5, method="lora", mix=[MixSource("toy-general", 0.3)]),
        TrialConfig(
            model="toy-qwen2.5-vl",
            parts="llm",
            lr=1e-5,
            continual_tasks=["toy-cl-shapes"],
            continual_epochs=[1.0],
            replay_per_task=2,
        ),
    ]
    for trial in trials:
        keys = set(trial.mlflow_params())
        assert keys - settings <= set(layout.DERIVED_PARAMS), keys - settings - set(layout.DERIVED_PARAMS)
    assert set(layout.TRIALS_COLUMNS) - {"name"} <= PARAMS


def test_a_sweep_of_another_layout_version_is_refused(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    accuracy = {quadrant: [50.0, 60.0] for quadrant in layout.QUADRANTS}
    parent = log_sweep(uri, "versions", [SyntheticTrial("llm", "full", "1e-05", accuracy=accuracy)])
    assert load_sweep("versions", uri).trials[0].final(layout.TARGET_QUADRANT) == 60.0
    MlflowClient(uri).set_tag(parent, layout.LAYOUT_TAG, str(layout.LAYOUT_VERSION + 1))
    with pytest.raises(
        AnalysisError,
        match=f"logged with layout version {layout.LAYOUT_VERSION + 1}; "
        f"this analysis reads version {layout.LAYOUT_VERSION}",
    ):
        load_sweep("versions", uri)
