"""cluster/: the launcher YAMLs pass Ray's own schema and config checks, the KubeRay RayJob has
the structure the sweep needs, the runtime_env is one Ray accepts, and no file holds a secret.

Nothing here starts Ray or talks to a cloud: the launcher files go through the same
``prepare_config`` / ``validate_config`` that ``ray up`` runs before it creates anything.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO_ROOT / "cluster"
IMAGE_REPO_DIR = "/home/ray/forgetless"
"""Where the KubeRay image holds the repository (cluster/README.md's Dockerfile copies it there)."""
RAY_CLUSTER_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
SWEEP_MODULE = "orchestrator.sweep"


def load_yaml(name: str) -> dict:
    with open(CLUSTER_DIR / name) as handle:
        return yaml.safe_load(handle)


# (file, provider type, GPU node field that names the GPU machine, accepted machine prefixes)
LAUNCHER_CASES = [
    pytest.param(
        "aws-gpu.yaml", "aws", "InstanceType", ("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p4de.", "p5."), id="aws"
    ),
    pytest.param("gcp-gpu.yaml", "gcp", "machineType", ("a2-", "a3-", "g2-", "n1-"), id="gcp"),
]


def gpu_node_types(config: dict) -> dict[str, dict]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if node_type.get("resources", {}).get("GPU", 0) > 0
    }


@pytest.mark.parametrize(("name", "provider", "machine_field", "gpu_machines"), LAUNCHER_CASES)
def test_launcher_matches_ray_schema(name, provider, machine_field, gpu_machines):
    schema = json.loads(RAY_CLUSTER_SCHEMA.read_text())
    jsonschema.validate(load_yaml(name), schema)


@pytest.mark.parametrize(("name", "provider", "machine_field", "gpu_machines"), LAUNCHER_CASES)
def test_launcher_passes_ray_up_config_checks(name, provider, machine_field, gpu_machines):
    prepared = prepare_config(load_yaml(name))
    validate_config(prepared)
    assert prepared["provider"]["type"] == provider


@pytest.mark.parametrize(("name", "provider", "machine_field", "gpu_machines"), LAUNCHER_CASES)
def test_launcher_cpu_head_and_autoscaling_gpu_workers(name, provider, machine_field, gpu_machines):
    config = load_yaml(name)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head node is a CPU node"
    gpu_types = gpu_node_types(config)
    assert len(gpu_types) == 1, f"{name}: expected one GPU worker type, got {sorted(gpu_types)}"
    (gpu_type,) = gpu_types.values()
    assert gpu_type["min_workers"] == 0, "GPU workers scale from zero"
    assert 1 <= gpu_type["max_workers"] <= config["max_workers"]
    assert gpu_type["node_config"][machine_field].startswith(gpu_machines)


def _misspell_max_workers(config: dict) -> None:
    config["max_worker"] = config.pop("max_workers")


def _unknown_head_type(config: dict) -> None:
    config["head_node_type"] = "no-such-node-type"


# (how the valid AWS file is broken, the exception Ray's checks raise)
BROKEN_LAUNCHER_CASES = {
    "misspelled top-level key": (_misspell_max_workers, jsonschema.ValidationError),
    "head type not among node types": (_unknown_head_type, ValueError),
}


@pytest.mark.parametrize(
    ("break_config", "error"), [pytest.param(*case, id=name) for name, case in BROKEN_LAUNCHER_CASES.items()]
)
def test_ray_checks_reject_a_broken_launcher(break_config, error):
    config = load_yaml("aws-gpu.yaml")
    break_config(config)
    with pytest.raises(error):
        validate_config(prepare_config(config))


def test_gcp_accelerators_match_declared_gpus():
    config = load_yaml("gcp-gpu.yaml")
    (gpu_type,) = gpu_node_types(config).values()
    (accelerator,) = gpu_type["node_config"]["guestAccelerators"]
    assert accelerator["acceleratorType"] == "nvidia-tesla-a100"
    assert accelerator["acceleratorCount"] == gpu_type["resources"]["GPU"]
    assert {"onHostMaintenance": "TERMINATE"} in gpu_type["node_config"]["scheduling"]


@pytest.mark.parametrize(("name", "provider", "machine_field", "gpu_machines"), LAUNCHER_CASES)
def test_launcher_installs_the_project_for_a_cluster(name, provider, machine_field, gpu_machines):
    config = load_yaml(name)
    mounted = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert len(mounted) == 1, f"{name}: the repository ('.') must be mounted once"
    installs = [cmd for cmd in config["setup_commands"] if "pip install" in cmd]
    assert any(mounted[0] in cmd for cmd in installs), f"{name}: setup_commands must pip install {mounted[0]}"
    for cmd in installs:
        assert " -e " not in f" {cmd} " and "[dev]" not in cmd, f"{name}: no editable/dev install on clusters: {cmd}"


RAYJOB = "kuberay-rayjob.yaml"

# (dotted path in the RayJob, expected value)
RAYJOB_FIELDS = [
    ("apiVersion", "ray.io/v1"),
    ("kind", "RayJob"),
    ("spec.shutdownAfterJobFinishes", True),
    ("spec.rayClusterSpec.enableInTreeAutoscaling", True),
]


def lookup(document: dict, dotted: str):
    value = document
    for key in dotted.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize(("dotted", "expected"), RAYJOB_FIELDS)
def test_rayjob_fields(dotted, expected):
    assert lookup(load_yaml(RAYJOB), dotted) == expected


def test_rayjob_entrypoint_runs_the_sweep():
    argv = shlex.split(load_yaml(RAYJOB)["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", SWEEP_MODULE]
    assert argv[3:] == ["grids/paper-table1.yaml"]


def test_rayjob_gpu_worker_group_autoscales():
    cluster_spec = load_yaml(RAYJOB)["spec"]["rayClusterSpec"]
    (group,) = cluster_spec["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert 0 == group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] >= 1
    head_containers = cluster_spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}) for c in head_containers)


def runtime_env_documents() -> list:
    """Every runtime_env in cluster/: the standalone file and the RayJob's embedded YAML.

    The RayJob's working_dir is the repository inside the image; Ray checks that a local
    working_dir exists, so here it is pointed at this checkout, which is what the image holds.
    """
    embedded = yaml.safe_load(load_yaml(RAYJOB)["spec"]["runtimeEnvYAML"])
    if embedded.get("working_dir") == IMAGE_REPO_DIR:
        embedded["working_dir"] = str(REPO_ROOT)
    return [
        pytest.param(load_yaml("runtime_env.yaml"), id="runtime_env.yaml"),
        pytest.param(embedded, id="kuberay-rayjob.yaml:runtimeEnvYAML"),
    ]


def test_rayjob_working_dir_is_the_repository_in_the_image():
    embedded = yaml.safe_load(load_yaml(RAYJOB)["spec"]["runtimeEnvYAML"])
    assert embedded["working_dir"] == IMAGE_REPO_DIR
    assert f"COPY --chown=ray . {IMAGE_REPO_DIR}" in (CLUSTER_DIR / "README.md").read_text()


@pytest.mark.parametrize("env", runtime_env_documents())
def test_runtime_env_is_accepted_by_ray(env):
    unknown = set(env) - RuntimeEnv.known_fields
    assert not unknown, f"runtime_env keys Ray does not know: {sorted(unknown)}"
    RuntimeEnv(**env)  # validates types of known fields (env_vars: Dict[str, str], excludes: List[str])


@pytest.mark.parametrize("excluded", [".venv/", "mlruns/", "sweeps/", "mlflow.db"])
def test_runtime_env_excludes_local_state(excluded):
    assert excluded in load_yaml("runtime_env.yaml")["excludes"]


def test_runtime_env_sets_torch_extensions_dir():
    assert "TORCH_EXTENSIONS_DIR" in load_yaml("runtime_env.yaml")["env_vars"]


SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret or session key name": re.compile(r"aws_secret_access_key|aws_session_token", re.IGNORECASE),
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key field": re.compile(r"\"private_key(?:_id)?\"\s*:"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "credential assignment": re.compile(
        r"(?i)\b(?:password|passwd|secret|token|api[_-]?key)\b['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+_\-]{16,}"
    ),
}

# One text each pattern must catch, assembled at run time so this file holds no such string.
SECRET_SAMPLES = {
    "AWS access key id": "key: AKIA" + "Q" * 16,
    "AWS secret or session key name": "AWS_SECRET_" + "ACCESS_KEY: x",
    "private key block": "-----BEGIN " + "RSA PRIVATE KEY-----",
    "service-account key field": '{"private' + '_key": "x"}',
    "GitHub token": "ghp_" + "a1" * 18,
    "Hugging Face token": "hf_" + "b2" * 16,
    "Google API key": "AIza" + "c" * 35,
    "credential assignment": "api_key = " + "d4" * 10,
}


@pytest.mark.parametrize("kind", sorted(SECRET_PATTERNS))
def test_secret_patterns_catch_their_sample(kind):
    assert SECRET_PATTERNS[kind].search(SECRET_SAMPLES[kind])


@pytest.mark.parametrize("path", sorted(CLUSTER_DIR.iterdir()), ids=lambda p: p.name)
def test_no_secrets_in_cluster_files(path):
    text = path.read_text()
    found = [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert not found, f"{path.name}: looks like it contains a secret ({', '.join(found)})"


def test_cluster_directory_has_every_file():
    names = {path.name for path in CLUSTER_DIR.iterdir()}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "kuberay-rayjob.yaml", "runtime_env.yaml", "README.md"} <= names
