"""cluster/: the launcher YAMLs pass Ray's own schema and config checks, the KubeRay RayJob and
RayCluster have the structure KubeRay and the sweep need (and agree with each other), the
runtime_env is one Ray accepts, and no file holds a secret.

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

from orchestrator.grid import load_grid

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
RAYCLUSTER = "kuberay-raycluster.yaml"
GPU_RESOURCE = "nvidia.com/gpu"

# (file, kind, dotted path of its RayCluster spec): what both KubeRay manifests share is
# checked once for each of them.
KUBERAY_MANIFESTS = [
    pytest.param(RAYJOB, "RayJob", "spec.rayClusterSpec", id="rayjob"),
    pytest.param(RAYCLUSTER, "RayCluster", "spec", id="raycluster"),
]
KUBERAY_FIELDS = ("name", "kind", "spec_path")

# (dotted path in the RayJob, expected value): what only a RayJob has
RAYJOB_FIELDS = [
    ("spec.shutdownAfterJobFinishes", True),
    ("spec.submissionMode", "K8sJobMode"),
]


def lookup(document: dict, dotted: str):
    value = document
    for key in dotted.split("."):
        value = value[key]
    return value


def cluster_spec(name: str, spec_path: str) -> dict:
    return lookup(load_yaml(name), spec_path)


def pod_containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def all_groups(spec: dict) -> list[tuple[str, dict]]:
    """(label, group spec) of the head group and of every worker group."""
    return [("headGroupSpec", spec["headGroupSpec"])] + [
        (f"workerGroupSpecs[{index}]", group) for index, group in enumerate(spec["workerGroupSpecs"])
    ]


def gpu_limit(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))


@pytest.mark.parametrize(KUBERAY_FIELDS, KUBERAY_MANIFESTS)
def test_kuberay_manifest_api_and_kind(name, kind, spec_path):
    manifest = load_yaml(name)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", kind)
    assert manifest["metadata"]["name"]


@pytest.mark.parametrize(KUBERAY_FIELDS, KUBERAY_MANIFESTS)
def test_kuberay_groups_have_the_fields_kuberay_requires(name, kind, spec_path):
    spec = cluster_spec(name, spec_path)
    assert spec["workerGroupSpecs"], f"{name}: no worker group"
    for label, group in all_groups(spec):
        assert isinstance(group["rayStartParams"], dict), f"{name}: {label}.rayStartParams must be a mapping"
        containers = pod_containers(group)
        assert containers, f"{name}: {label} has no container"
        for container in containers:
            assert container["name"] and container["image"], f"{name}: {label} container needs a name and an image"
    for index, group in enumerate(spec["workerGroupSpecs"]):
        assert group["groupName"], f"{name}: workerGroupSpecs[{index}] needs a groupName"
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (
            f"{name}: group {group['groupName']} needs minReplicas <= replicas <= maxReplicas"
        )
    assert len({group["groupName"] for group in spec["workerGroupSpecs"]}) == len(spec["workerGroupSpecs"])


@pytest.mark.parametrize(KUBERAY_FIELDS, KUBERAY_MANIFESTS)
def test_kuberay_autoscaling_is_on(name, kind, spec_path):
    spec = cluster_spec(name, spec_path)
    assert spec["enableInTreeAutoscaling"] is True
    assert int(spec["autoscalerOptions"]["idleTimeoutSeconds"]) > 0, "idle GPU pods must be released"


@pytest.mark.parametrize(KUBERAY_FIELDS, KUBERAY_MANIFESTS)
def test_kuberay_cpu_head_and_gpu_group_scaling_from_zero(name, kind, spec_path):
    spec = cluster_spec(name, spec_path)
    assert all(gpu_limit(c) == 0 for c in pod_containers(spec["headGroupSpec"])), "the head is a CPU pod"
    gpu_groups = [g for g in spec["workerGroupSpecs"] if any(gpu_limit(c) for c in pod_containers(g))]
    assert len(gpu_groups) == 1, f"{name}: expected one GPU worker group"
    (group,) = gpu_groups
    assert group["minReplicas"] == 0 == group["replicas"], "GPU pods exist only while trials need them"
    assert group["maxReplicas"] >= 1
    for container in pod_containers(group):
        requests = container["resources"].get("requests", {})
        assert int(requests.get(GPU_RESOURCE, gpu_limit(container))) == gpu_limit(container) >= 1, (
            "GPU requests and limits must agree"
        )


CREDENTIAL_NAME = re.compile(r"(?i)(?:^|_)(?:password|passwd|secret|token|api_?key|access_key|credentials?)(?:_|$)")
"""An environment variable name that holds a credential (the words between underscores)."""


@pytest.mark.parametrize(
    ("variable", "is_credential"),
    [
        ("MLFLOW_TRACKING_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("MLFLOW_TRACKING_PASSWORD", True),
        ("HF_TOKEN", True),
        ("TOKENIZERS_PARALLELISM", False),
        ("FORGETLESS_CACHE", False),
    ],
)
def test_credential_names_are_recognised(variable, is_credential):
    assert bool(CREDENTIAL_NAME.search(variable)) is is_credential


@pytest.mark.parametrize(KUBERAY_FIELDS, KUBERAY_MANIFESTS)
def test_kuberay_credentials_only_from_secrets(name, kind, spec_path):
    """An environment variable that names a credential may only reference a Secret (valueFrom)."""
    for label, group in all_groups(cluster_spec(name, spec_path)):
        for container in pod_containers(group):
            for variable in container.get("env", []):
                if CREDENTIAL_NAME.search(variable["name"]):
                    assert "value" not in variable, f"{name}: {label} sets {variable['name']} in plain text"


def test_kuberay_manifests_agree():
    """The one-sweep RayJob and the interactive RayCluster run the same image, Ray and autoscaler."""
    job = cluster_spec(RAYJOB, "spec.rayClusterSpec")
    interactive = cluster_spec(RAYCLUSTER, "spec")
    images = {c["image"] for spec in (job, interactive) for _, g in all_groups(spec) for c in pod_containers(g)}
    assert len(images) == 1, f"one image for every pod of both manifests, got {sorted(images)}"
    for key in ("rayVersion", "autoscalerOptions"):
        assert job[key] == interactive[key], key
    assert job["headGroupSpec"]["rayStartParams"] == interactive["headGroupSpec"]["rayStartParams"]
    assert containers_without_env(job["headGroupSpec"]) == containers_without_env(interactive["headGroupSpec"])
    job_groups = {group["groupName"]: group for group in job["workerGroupSpecs"]}
    for group in interactive["workerGroupSpecs"]:
        same = job_groups[group["groupName"]]
        assert group["maxReplicas"] == same["maxReplicas"], group["groupName"]
        assert containers_without_env(group) == containers_without_env(same), f"group {group['groupName']}"


def containers_without_env(group: dict) -> list[dict]:
    """A group's containers less their environment (the RayCluster sets what the RayJob's runtime env sets)."""
    return [{key: value for key, value in container.items() if key != "env"} for container in pod_containers(group)]


def test_raycluster_env_matches_what_jobs_get():
    """Every RayCluster pod has the environment the RayJob gives its sweep (same names, same values)."""
    job_env = yaml.safe_load(load_yaml(RAYJOB)["spec"]["runtimeEnvYAML"])["env_vars"]
    for label, group in all_groups(cluster_spec(RAYCLUSTER, "spec")):
        for container in pod_containers(group):
            env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
            assert env == job_env, f"{label} {container['name']}"


@pytest.mark.parametrize(("dotted", "expected"), RAYJOB_FIELDS)
def test_rayjob_fields(dotted, expected):
    assert lookup(load_yaml(RAYJOB), dotted) == expected


def rayjob_argv() -> list[str]:
    return shlex.split(load_yaml(RAYJOB)["spec"]["entrypoint"])


def test_rayjob_entrypoint_runs_the_sweep():
    argv = rayjob_argv()
    assert argv[:3] == ["python", "-m", SWEEP_MODULE]
    assert argv[3:] == ["grids/paper-table1.yaml"]


def test_rayjob_entrypoint_grid_exists_and_validates(monkeypatch):
    """The grid the RayJob runs is in the repository (the job's working dir) and is valid.

    Paths are not checked: the model and data it names are on the cluster, not here.
    """
    grid_path = rayjob_argv()[3]
    assert (REPO_ROOT / grid_path).is_file()
    monkeypatch.chdir(REPO_ROOT)
    grid = load_grid(grid_path, check_paths=False)
    assert grid.resources.gpus_per_worker >= 1, "the RayJob's GPU pods are for GPU trials"


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


CLUSTER_FILES = ("aws-gpu.yaml", "gcp-gpu.yaml", RAYJOB, RAYCLUSTER, "runtime_env.yaml", "README.md")
"""What cluster/ must hold; the secret scan covers these and anything else in the directory."""


@pytest.mark.parametrize("name", sorted({*CLUSTER_FILES, *(path.name for path in CLUSTER_DIR.iterdir())}))
def test_no_secrets_in_cluster_files(name):
    text = (CLUSTER_DIR / name).read_text()
    found = [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert not found, f"{name}: looks like it contains a secret ({', '.join(found)})"


def test_cluster_directory_has_every_file():
    names = {path.name for path in CLUSTER_DIR.iterdir()}
    assert set(CLUSTER_FILES) <= names


@pytest.mark.parametrize("name", [RAYJOB, RAYCLUSTER, "aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cluster_files_mark_what_to_edit(name):
    assert "REPLACE_ME" in (CLUSTER_DIR / name).read_text()


def test_readme_lists_every_cluster_file():
    readme = (CLUSTER_DIR / "README.md").read_text()
    missing = [name for name in CLUSTER_FILES if name != "README.md" and f"| `{name}` |" not in readme]
    assert not missing, f"cluster/README.md's table lacks {missing}"
