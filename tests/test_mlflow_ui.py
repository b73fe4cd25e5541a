"""Sweep experiments open on the MLflow UI's runs table, not its GenAI view.

python -m pytest -q tests/test_mlflow_ui.py
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from jobs.finetune.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_id
from orchestrator.mlflow_bookkeeping import runs_page_hint


def test_new_and_existing_experiments_are_tagged_as_model_training(tracking_uri):
    client = MlflowClient(tracking_uri)
    created = experiment_id(client, "ui-created")
    untagged = client.create_experiment("ui-untagged")
    assert experiment_id(client, "ui-untagged") == untagged
    for experiment in (created, untagged):
        assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "http://127.0.0.1:5001/",
            "compare the trials: http://127.0.0.1:5001/#/experiments/7/runs?workflowType=machine_learning",
        ),
        (
            "sqlite:///mlflow.db",
            "compare the trials: mlflow ui --backend-store-uri sqlite:///mlflow.db, "
            "then open http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning",
        ),
    ],
)
def test_the_runs_page_hint_opens_the_runs_table(uri, expected):
    assert runs_page_hint(uri, "7") == expected
