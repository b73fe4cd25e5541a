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
from analysis.runs import load_sweep
from analysis.synthetic import SyntheticTrial, log_sweep
from contract import layout

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "jobs", "orchestrator", "recipes")
METRIC_PREFIXES = ("acc/", "delta/q/", "cl/", "train/", "time/", "model/", "predictions/", "continual/")
TAGS = {value for name, value in vars(layout).items() if name.endswith("_TAG") and "." in value}
"""The namespaced tags (``sweep`` and ``trial_id`` are also param and field names)."""
QUADRANT_TUPLES = {layout.QUADRANTS, layout.OOD_QUADRANTS}


def layout_spellings(path: Path) -> list[str]:
    """``file:line text`` for every string or quadrant tuple of the layout that the code (not a docstring) writes."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in TAGS or node.value.startswith(METRIC_PREFIXES):
                found.append(f"{where}:{node.lineno} {node.value!r}")
        elif isinstance(node, ast.Tuple) and all(isinstance(item, ast.Constant) for item in node.elts):
            if tuple(item.value for item in node.elts) in QUADRANT_TUPLES:
                found.append(f"{where}:{node.lineno} quadrant tuple")
    return found


def test_no_module_outside_the_contract_spells_the_layout():
    found = [spelling for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for spelling in layout_spellings(path)]
    assert found == []


def test_the_check_finds_a_spelled_out_tag(tmp_path: Path):
    module = tmp_path / "sample.py"
    module.write_text('"""Docstring naming forgetless.kind is fine."""\nTAGS = {"forgetless.kind": "trial"}\n'
                      'NAME = f"acc/q/{1}"\nQ = ("id_ood", "ood_id", "ood_ood")\n')
    assert sorted(layout_spellings(module)) == ["sample.py:2 'forgetless.kind'", "sample.py:3 'acc/q/'",
                                                "sample.py:4 quadrant tuple"]


def test_a_sweep_of_another_layout_version_is_refused(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    accuracy = {quadrant: [50.0, 60.0] for quadrant in layout.QUADRANTS}
    parent = log_sweep(uri, "versions", [SyntheticTrial("llm", "full", "1e-05", accuracy=accuracy)])
    assert load_sweep("versions", uri).trials[0].final(layout.TARGET_QUADRANT) == 60.0
    MlflowClient(uri).set_tag(parent, layout.LAYOUT_TAG, str(layout.LAYOUT_VERSION + 1))
    with pytest.raises(AnalysisError, match=f"logged with layout version {layout.LAYOUT_VERSION + 1}; "
                                            f"this analysis reads version {layout.LAYOUT_VERSION}"):
        load_sweep("versions", uri)
