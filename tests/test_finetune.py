"""A trial end to end: Ray Train workers, DeepSpeed on CPU/gloo, MLflow, checkpoints, resume, S3."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from contract import layout
from jobs.checkpoints import load_trial_checkpoint, trained_state_dict
from jobs.finetune.config import TrialConfig, problem_message
from jobs.finetune.loop import RESUMED_TAG, TrialWorker, checkpoint_steps, early_stop_reason, eval_steps
from jobs.trial import ensure_trial_run, run_trial
from recipes.data.encoded_store import store_entries
from recipes.models import load_model, resolve_model_dir
from recipes.parts import resolve_parts
from tests.conftest import WorkerKiller, latest_registered_checkpoint, metric_steps

PARTS = "llm.attn+lm_head"
"""Trained parts of the main trial test: attention projections and the output head."""


def part_names(parts: str) -> set[str]:
    """Parameter names ``parts`` selects on the test trials' model."""
    loaded = load_model("toy-qwen2.5-vl-init")
    return set(resolve_parts(loaded.model, loaded.family, parts))


def make_trial(tmp_path: Path, tracking_uri: str, **overrides) -> TrialConfig:
    settings = dict(
        model="toy-qwen2.5-vl-init",
        parts="llm.attn",
        lr=2e-3,
        steps=12,
        eval_every=6,
        batch_size=8,
        micro_batch_size=4,
        workers=1,
        zero_stage=2,
        warmup_ratio=0.0,
        eval_batch_size=64,
        storage=str(tmp_path / "storage"),
        tracking_uri=tracking_uri,
        experiment=f"test-{tmp_path.name}",
    )
    settings.update(overrides)
    return TrialConfig(**settings)


def test_two_worker_zero2_trial_learns_and_logs_each_step_once(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, parts=PARTS, workers=2, micro_batch_size=2, steps=24, eval_every=12)
    assert trial.grad_accumulation == 2
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error

    for key in (
        layout.accuracy_metric("id_id"),
        layout.accuracy_metric("ood_ood"),
        layout.delta_metric("ood_id"),
        layout.dataset_metric("toy-wiki"),
    ):
        assert metric_steps(tracking_uri, outcome.run_id, key) == [0, 12, 24]
    assert metric_steps(tracking_uri, outcome.run_id, layout.TRAIN_LOSS) == [10, 12, 20, 24]
    losses = [
        m.value
        for m in sorted(
            MlflowClient(tracking_uri).get_metric_history(outcome.run_id, layout.TRAIN_LOSS), key=lambda m: m.step
        )
    ]
    assert losses[-1] < 0.7 * losses[0]
    assert [
        m.value for m in MlflowClient(tracking_uri).get_metric_history(outcome.run_id, layout.FROZEN_TENSORS_CHANGED)
    ] == [0.0, 0.0]
    # where the trial's time went: training and evaluation per evaluation step, the whole run once at its end
    seconds = {
        key: {m.step: m.value for m in MlflowClient(tracking_uri).get_metric_history(outcome.run_id, key)}
        for key in (layout.TIME_TRAIN_S, layout.TIME_EVAL_S, layout.TIME_TRIAL_S)
    }
    assert sorted(seconds[layout.TIME_TRAIN_S]) == [12, 24] and all(
        v > 0 for v in seconds[layout.TIME_TRAIN_S].values()
    )
    assert sorted(seconds[layout.TIME_EVAL_S]) == [0, 12, 24] and all(
        v > 0 for v in seconds[layout.TIME_EVAL_S].values()
    )
    assert list(seconds[layout.TIME_TRIAL_S]) == [24]
    assert seconds[layout.TIME_TRIAL_S][24] > sum(seconds[layout.TIME_TRAIN_S].values()) + sum(
        seconds[layout.TIME_EVAL_S].values()
    )
    run = MlflowClient(tracking_uri).get_run(outcome.run_id)
    assert run.data.tags[layout.STATUS_TAG] == "finished"
    assert run.data.params[layout.PARAM_PARTS] == PARTS and run.data.params[layout.PARAM_TRIAL_ID] == trial.trial_id

    # the checkpoint holds exactly the trained tensors, and they moved; everything else is the base's
    checkpoint = outcome.checkpoint
    base = load_model("toy-qwen2.5-vl-init").model
    selected = part_names(PARTS)
    trained = trained_state_dict(checkpoint)
    assert set(trained) == selected
    assert all(not torch.equal(trained[name], base.get_parameter(name)) for name in selected)
    loaded, settings, step = load_trial_checkpoint(checkpoint)
    assert step == 24 and settings["parts"] == PARTS
    independent = independent_base(trial.model)
    assert {name for name, _ in loaded.model.named_parameters()} == set(independent)
    for name, param in loaded.model.named_parameters():
        expected = trained[name] if name in selected else independent[name]
        assert torch.equal(param, expected), name


def independent_base(model: str) -> dict[str, torch.Tensor]:
    """The base model's tensors read straight from its safetensors file, under the loaded model's names."""
    from safetensors.torch import load_file

    def module_name(key: str) -> str:  # how transformers maps Qwen2.5-VL's saved names onto its modules
        if key.startswith("visual."):
            return f"model.{key}"
        return f"model.language_model.{key[len('model.') :]}" if key.startswith("model.") else key

    tensors = {}
    for path in sorted(resolve_model_dir(model).glob("*.safetensors")):
        tensors.update({module_name(key): tensor for key, tensor in load_file(path).items()})
    return tensors


CHANGED_FROZEN = "model.visual.patch_embed.proj.weight"
"""The frozen tensor the probe trial changes on purpose (the trial trains ``llm.attn``)."""


def fit_probe(loop, config: dict, name: str, tmp_path: Path) -> None:
    """Run a probe trial worker's loop under real Ray Train: one worker, gloo."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(
        loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "storage")),
    ).fit()


class FrozenTensorProbe(TrialWorker):
    """A trial worker that adds 1 to a frozen tensor after its first step and saves its frozen tensors at the end."""

    def __init__(self, trial: TrialConfig, changed: str, out: str) -> None:
        super().__init__(trial)
        self.changed, self.out = changed, out

    def train_step(self, step: int) -> tuple[float, int]:
        result = super().train_step(step)
        if step == 0:
            with torch.no_grad():
                self.engine.module.get_parameter(self.changed).add_(1.0)
        return result

    def run(self) -> None:
        super().run()
        module = self.engine.module
        torch.save({name: p.detach().cpu() for name, p in module.named_parameters() if not p.requires_grad}, self.out)


def frozen_tensor_probe_loop(config: dict) -> None:
    """Ray Train entry point of the probe trial."""
    FrozenTensorProbe(TrialConfig.from_dict(config["trial"]), config["changed"], config["out"]).run()


def test_a_changed_frozen_tensor_is_flagged_and_the_rest_equal_the_base(tmp_path, tracking_uri, ray_cluster):
    """The in-trial fingerprint flags the one frozen tensor changed on purpose, and every other frozen
    tensor at the end of training equals the base model read independently from its file."""
    trial = ensure_trial_run(make_trial(tmp_path, tracking_uri, steps=4, eval_every=2))
    out = tmp_path / "frozen.pt"
    fit_probe(
        frozen_tensor_probe_loop,
        {"trial": trial.to_dict(), "changed": CHANGED_FROZEN, "out": str(out)},
        "frozen-probe",
        tmp_path,
    )
    history = MlflowClient(tracking_uri).get_metric_history(trial.run_id, layout.FROZEN_TENSORS_CHANGED)
    assert sorted((m.step, m.value) for m in history) == [(2, 1.0), (4, 1.0)]

    frozen, base = torch.load(out), independent_base(trial.model)
    assert set(frozen) == set(base) - part_names("llm.attn")
    assert torch.equal(frozen[CHANGED_FROZEN], base[CHANGED_FROZEN] + 1.0)
    assert [name for name in frozen if name != CHANGED_FROZEN and not torch.equal(frozen[name], base[name])] == []


class EncodedStoreProbe(TrialWorker):
    """A trial worker that saves, at the end, what its collators read from and wrote to their disk stores."""

    def __init__(self, trial: TrialConfig, out: str) -> None:
        super().__init__(trial)
        self.out = out

    def run(self) -> None:
        super().run()
        stores = {"train": self.collate.store, "eval": self.evaluator.scorer.collator.store}
        torch.save(
            {
                kind: None if store is None else (store.hits + store.misses, len(store_entries(store.directory)))
                for kind, store in stores.items()
            },
            self.out,
        )


def encoded_store_probe_loop(config: dict) -> None:
    """Ray Train entry point of the encoded-store probe trial."""
    EncodedStoreProbe(TrialConfig.from_dict(config["trial"]), config["out"]).run()


def test_a_trial_keeps_its_encoded_rows_for_the_next_trials(tmp_path, tracking_uri, ray_cluster):
    """Training and evaluation rows go through the machine's disk store of encoded rows, so the next
    trial on the machine loads them instead of encoding again (``tests/test_encoded_store.py``)."""
    trial = ensure_trial_run(make_trial(tmp_path, tracking_uri, steps=2, eval_every=2))
    out = tmp_path / "stores.pt"
    fit_probe(encoded_store_probe_loop, {"trial": trial.to_dict(), "out": str(out)}, "store-probe", tmp_path)
    used = torch.load(out)
    assert used["train"] is not None and used["eval"] is not None
    assert used["train"][0] >= trial.steps * trial.batch_size and used["train"][1] >= trial.batch_size
    assert used["eval"][0] > 0 and used["eval"][1] > 0


def test_lora_trial_saves_adapters_only(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(
        tmp_path, tracking_uri, parts="llm", method="lora", lora_r=4, lora_alpha=8, zero_stage=0, steps=6, eval_every=6
    )
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    trained = trained_state_dict(outcome.checkpoint)
    assert trained and all(".lora_" in name for name in trained)


def test_zero3_trial_runs(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, workers=2, micro_batch_size=2, zero_stage=3, steps=4, eval_every=4)
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    assert metric_steps(tracking_uri, outcome.run_id, layout.accuracy_metric("id_id")) == [0, 4]
    assert set(trained_state_dict(outcome.checkpoint)) == part_names("llm.attn")


def logged_steps(tracking_uri: str, run_id: str) -> dict[str, list[int]]:
    """Every metric of a run with the steps it was logged at (duplicates kept)."""
    client = MlflowClient(tracking_uri)
    return {key: metric_steps(tracking_uri, run_id, key) for key in client.get_run(run_id).data.metrics}


KILL = dict(steps=24, eval_every=4, checkpoint_every=8, log_every=1)
"""The worker-kill trial: train metrics every step, evaluations every 4 steps, checkpoints at 8, 16 and 24."""


def test_worker_killed_between_checkpoints_replays_steps_without_logging_any_twice(tmp_path, tracking_uri, ray_cluster):
    """Killed once an evaluation after its registered checkpoint (8 or 16) is in MLflow, the trial
    restarts from that checkpoint and replays the steps after it (train metrics and an evaluation
    already logged): each is logged once, and it ends with the weights of an uninterrupted run, bit
    for bit. The kill waits for the controller to register the checkpoint, whatever the load."""
    trial = make_trial(tmp_path, tracking_uri, **KILL)
    trial = ensure_trial_run(trial)
    storage = tmp_path / "storage"

    def evaluated_after_a_registered_checkpoint() -> bool:
        registered = latest_registered_checkpoint(storage)
        return registered in (8, 16) and registered + 4 in metric_steps(
            tracking_uri, trial.run_id, layout.accuracy_metric("id_id")
        )

    killer = WorkerKiller(evaluated_after_a_registered_checkpoint, storage)
    killer.start()
    outcome = run_trial(trial)
    killer.join(timeout=60)
    assert killer.error is None and killer.killed, killer.error
    assert killer.checkpoint_at_kill in (8, 16), f"killed with checkpoint {killer.checkpoint_at_kill} registered"
    assert outcome.status == "finished", outcome.error
    assert MlflowClient(tracking_uri).get_run(outcome.run_id).data.tags[RESUMED_TAG] == str(killer.checkpoint_at_kill)
    evaluated = list(range(0, 25, 4))
    steps = logged_steps(tracking_uri, outcome.run_id)
    assert steps[layout.TRAIN_LOSS] == list(range(1, 25))
    assert steps[layout.accuracy_metric("id_id")] == steps[layout.delta_metric("ood_id")] == evaluated
    assert steps[layout.FROZEN_TENSORS_CHANGED] == evaluated[1:]
    assert all(len(logged) == len(set(logged)) for logged in steps.values()), steps

    uninterrupted = run_trial(
        make_trial(tmp_path / "uninterrupted", tracking_uri, experiment=f"test-{tmp_path.name}-straight", **KILL)
    )
    assert uninterrupted.status == "finished", uninterrupted.error
    resumed, straight = trained_state_dict(outcome.checkpoint), trained_state_dict(uninterrupted.checkpoint)
    assert set(resumed) == set(straight)
    assert all(torch.equal(resumed[name], straight[name]) for name in straight), "resumed weights differ"
    losses = {
        run: {m.step: m.value for m in MlflowClient(tracking_uri).get_metric_history(run, layout.TRAIN_LOSS)}
        for run in (outcome.run_id, uninterrupted.run_id)
    }
    assert losses[outcome.run_id] == losses[uninterrupted.run_id]  # replayed and later steps alike


def test_s3_storage_writes_checkpoints_and_resume_reads_them(tmp_path, tracking_uri, ray_cluster, s3_endpoint):
    import boto3

    from tests.conftest import S3_BUCKET

    prefix = f"sweeps-{tmp_path.name}"
    trial = make_trial(tmp_path, tracking_uri, steps=4, eval_every=2, storage=f"s3://{S3_BUCKET}/{prefix}")
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)[
            "Contents"
        ]
    ]
    run_dir = f"{prefix}/{trial.experiment}/{trial.run_name}/"
    assert any(key.startswith(run_dir + "checkpoint_") and key.endswith("trainer_state.json") for key in keys)
    assert any(key.startswith(f"{prefix}/zero-shot/") for key in keys)

    again = run_trial(trial.with_run(run_id=outcome.run_id))  # the same trial: Ray Train restores it from S3
    assert again.status == "finished", again.error
    assert MlflowClient(tracking_uri).get_run(outcome.run_id).data.tags[RESUMED_TAG] == "4"
    assert metric_steps(tracking_uri, outcome.run_id, layout.accuracy_metric("id_id")) == [0, 2, 4]


@pytest.mark.parametrize(
    ("steps", "every", "expected"),
    [(10, 5, [0, 5, 10]), (12, 5, [0, 5, 10, 12]), (3, 10, [0, 3]), (1, 1, [0, 1])],
)
def test_evaluation_steps(tmp_path, steps, every, expected):
    assert eval_steps(make_trial(tmp_path, "sqlite://", steps=steps, eval_every=every)) == expected


@pytest.mark.parametrize(
    ("steps", "every", "checkpoint_every", "expected"),
    [(12, 3, None, {3, 6, 9, 12}), (12, 3, 6, {6, 12}), (14, 3, 6, {6, 12, 14}), (12, 3, 12, {12})],
)
def test_checkpoint_steps(tmp_path, steps, every, checkpoint_every, expected):
    trial = make_trial(tmp_path, "sqlite://", steps=steps, eval_every=every, checkpoint_every=checkpoint_every)
    assert checkpoint_steps(trial) == expected


@pytest.mark.parametrize(
    ("deltas", "threshold", "stops"),
    [
        ({"id_ood": -1.0, "ood_id": -16.0, "ood_ood": 0.0}, 15, "ood_id -16.0 pp"),
        ({"id_ood": -15.0, "ood_id": 2.0, "ood_ood": 0.0}, 15, None),
        ({"id_ood": -30.0, "ood_id": -20.0, "ood_ood": -1.0}, 15, "id_ood -30.0 pp, ood_id -20.0 pp"),
        ({"id_ood": -90.0, "ood_id": -90.0, "ood_ood": -90.0}, None, None),
    ],
)
def test_early_stop_rule(deltas, threshold, stops):
    reason = early_stop_reason(
        {layout.delta_metric(q): v for q, v in deltas.items()} | {layout.delta_metric("id_id"): -50.0}, threshold
    )
    if stops is None:
        assert reason is None
    else:
        assert reason == f"OOD drop beyond {threshold:g} pp vs zero-shot: {stops}"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"lr": 0}, "lr", "must be > 0"),
        (
            {"batch_size": 10, "workers": 2, "micro_batch_size": 4},
            None,
            "batch_size 10 must be a multiple of workers x micro_batch_size (2 x 4)",
        ),
        ({"data_fraction": 0}, "data_fraction", "must be > 0"),
        ({"zero_stage": 4}, "zero_stage", "must be <= 3"),
        ({"schedule": "step"}, "schedule", "must be one of 'cosine', 'linear', 'constant'; got 'step'"),
        ({"parts": "llm.mlp"}, "parts", "unknown part 'llm.mlp'"),
        ({"checkpoint_every": 5}, None, "checkpoint_every must be a multiple of eval_every (6), got 5"),
        ({"log_every": 0}, "log_every", "must be >= 1"),
        ({"lr": float("inf")}, "lr", "finite number"),
        ({"experiment": "../up"}, "experiment", "must use only letters"),
    ],
)
def test_trial_config_validation(tmp_path, overrides, field, message):
    """Each bad setting is one problem naming its field (None: a rule across fields)."""
    with pytest.raises(ValidationError) as error:
        make_trial(tmp_path, "sqlite://", **overrides)
    problems = [
        (".".join(map(str, item["loc"])) or None, problem_message(item))
        for item in error.value.errors(include_url=False)
    ]
    assert any(name == field and message in text for name, text in problems), problems


def test_trial_identity_ignores_where_it_runs(tmp_path):
    trial = make_trial(tmp_path, "sqlite://")
    moved = trial.with_run(storage="s3://elsewhere", tracking_uri="http://127.0.0.1:5000", run_id="abc")
    assert moved.trial_id == trial.trial_id
    assert make_trial(tmp_path, "sqlite://", lr=1e-4).trial_id != trial.trial_id
    assert trial.name == "llm.attn-full-lr2e-03-f1.0-s0"


def refuses_connections(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` any more."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_training_waits_out_an_mlflow_server_outage_and_logs_each_step_once(tmp_path, ray_cluster):
    """The tracking server is killed once the trial has logged step 2 and started again (same port and
    store): rank 0's MLflow client retries, the trial finishes, every step is in the run once, and the
    run shows training on both sides of the outage (train/loss points logged before the server went
    away and after it was back). The server is killed rather than stopped: a graceful shutdown takes
    seconds, in which the trial could finish its 30 steps before the outage began."""
    import threading
    import time

    from tests.conftest import MlflowServer, wait_for

    server = MlflowServer(tmp_path)
    server.start()
    steps = 30
    trial = ensure_trial_run(make_trial(tmp_path, server.uri, steps=steps, eval_every=15, log_every=1))
    outcome: list = []
    training = threading.Thread(target=lambda: outcome.append(run_trial(trial)), daemon=True)
    training.start()
    try:
        wait_for(lambda: 2 in metric_steps(server.uri, trial.run_id, layout.TRAIN_LOSS), "the trial logging step 2")
        server.kill()
        wait_for(lambda: refuses_connections(server.port), "the tracking server to go away")
        went_away = time.time() * 1000
    finally:
        server.start()
    training.join(timeout=600)
    try:
        assert outcome and outcome[0].status == "finished", outcome and outcome[0].error
        assert metric_steps(server.uri, trial.run_id, layout.TRAIN_LOSS) == list(range(1, steps + 1))
        assert metric_steps(server.uri, trial.run_id, layout.accuracy_metric("id_id")) == [0, 15, 30]
        logged_at = [m.timestamp for m in MlflowClient(server.uri).get_metric_history(trial.run_id, layout.TRAIN_LOSS)]
        # values made before and after the server went away, every one stored once: training went on
        # through the outage (its values waited in the tracker's buffer, the evaluation's write waited for the server)
        assert min(logged_at) <= went_away <= max(logged_at), "the trial did not run through the outage"
    finally:
        server.stop()
