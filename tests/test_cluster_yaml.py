"""cluster.yaml is a valid Ray cluster-launcher config and says what users rely on.

Validation is Ray's own, offline: ``prepare_config`` (what ``ray up`` does first:
merge the provider's bundled defaults.yaml, merge setup commands, fill per-type
min/max workers) then ``validate_config`` (Ray's JSON schema plus its
cross-field checks). Neither touches the cloud: ``ray up`` only calls AWS in the
later provider bootstrap step, which is not run here. Sockets are blocked for
the whole module to prove it.
"""

from __future__ import annotations

import copy
import shlex
import socket
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any attempt to open a network connection (no cloud, no registry)."""

    def refuse(*args, **kwargs):
        raise AssertionError("cluster.yaml validation tried to use the network")

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def raw() -> dict:
    with CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


@pytest.fixture
def config(raw) -> dict:
    return copy.deepcopy(raw)


@pytest.fixture
def prepared(raw) -> dict:
    # prepare_config deep-copies via fillout_defaults, but be explicit: the
    # module-scoped raw dict must stay pristine for the other tests.
    return prepare_config(copy.deepcopy(raw))


def start_command(commands: list[str], needle: str) -> list[str]:
    """The tokens of the one `ray start` invocation containing ``needle``."""
    found = [c for c in commands if needle in c]
    assert len(found) == 1, f"expected one command with {needle!r}, got {found}"
    tokens = shlex.split(found[0].replace(";", " ; "))
    start = tokens.index("start")
    assert tokens[start - 1] == "ray"
    end = tokens.index(";", start) if ";" in tokens[start:] else len(tokens)
    return tokens[start + 1:end]


def gpu_worker_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items()
            if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1}


# ----------------------------------------------------------------- Ray's schema

def test_prepared_config_passes_rays_validation(prepared):
    validate_config(prepared)  # raises on any schema or cross-field error


def test_prepare_config_keeps_our_commands_over_provider_defaults(raw, prepared):
    # fillout_defaults is a shallow dict.update over aws/defaults.yaml: any
    # top-level key we left out would silently come from Ray's example
    # (dashboard on 0.0.0.0, a nightly Ray wheel in setup). Ours must win.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands",
                "initialization_commands", "file_mounts", "auth", "provider",
                "available_node_types", "max_workers", "cluster_synced_files"):
        assert key in raw, f"{key} must be set explicitly, not inherited from Ray's defaults"
    all_commands = " ".join(prepared["head_setup_commands"] + prepared["worker_setup_commands"]
                            + prepared["head_start_ray_commands"]
                            + prepared["worker_start_ray_commands"])
    assert "0.0.0.0" not in all_commands
    assert "ray-wheels" not in all_commands
    # setup_commands are merged in front of the per-role setup commands.
    n = len(raw["setup_commands"])
    assert prepared["head_setup_commands"][:n] == raw["setup_commands"]
    assert prepared["worker_setup_commands"][:n] == raw["setup_commands"]


def test_prepare_config_fills_per_type_worker_limits(raw, prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["max_workers"] == 0 and head["min_workers"] == 0
    for name, node_type in types.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= raw["max_workers"], name


@pytest.mark.parametrize("where", ["top level", "node type"])
def test_unknown_key_is_rejected(config, where):
    # A typo must not pass silently: proves validate_config really checks.
    if where == "top level":
        config["max_workerz"] = 4
    else:
        name = next(iter(gpu_worker_types(config)))
        config["available_node_types"][name]["min_workerz"] = 0
    prepared = prepare_config(config)
    with pytest.raises(jsonschema.ValidationError, match="workerz"):
        validate_config(prepared)


def test_non_integer_gpu_count_is_rejected(config):
    name = next(iter(gpu_worker_types(config)))
    config["available_node_types"][name]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_documented_on_prem_variant_validates(config):
    # The comment's recipe: provider local with head_ip/worker_ips, no node types.
    config["provider"] = {"type": "local", "head_ip": "10.0.0.10",
                          "worker_ips": ["10.0.0.11", "10.0.0.12"]}
    config["auth"] = {"ssh_user": "me", "ssh_private_key": "~/.ssh/id_rsa"}
    del config["available_node_types"], config["head_node_type"]
    config["max_workers"] = 2
    prepared = prepare_config(config)
    validate_config(prepared)
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]


# ----------------------------------------------------------- what users rely on

def test_aws_gpu_cluster(raw):
    assert raw["provider"]["type"] == "aws"
    assert raw["provider"]["region"]
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"]["CPU"] >= 1
    assert head["resources"]["GPU"] == 0
    assert head["node_config"]["InstanceType"]


def test_autoscaling_gpu_worker_type(raw):
    gpu = gpu_worker_types(raw)
    assert gpu, "no worker node type with resources GPU >= 1"
    for name, node_type in gpu.items():
        assert node_type["min_workers"] == 0, f"{name} must scale to zero"
        assert node_type["max_workers"] >= 1, name
        assert node_type["node_config"]["InstanceType"], name
        assert isinstance(node_type["resources"]["GPU"], int), name


def test_image_matches_local_ray(raw):
    # The launcher requires the same Ray on the laptop and the cluster.
    image = raw["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), image
    assert image.endswith("-gpu"), image


def test_dashboard_only_on_loopback(raw):
    args = start_command(raw["head_start_ray_commands"], "--head")
    assert "--dashboard-host=127.0.0.1" in args
    assert not any(a.startswith("--dashboard-host") and a != "--dashboard-host=127.0.0.1"
                   for a in args)
    assert "--port=6379" in args
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in args


def test_workers_join_the_head(raw):
    args = start_command(raw["worker_start_ray_commands"], "--address")
    assert "--address=$RAY_HEAD_IP:6379" in args
    assert "--head" not in args


def test_every_process_uses_tf_keras(raw):
    assert any("export" in c and "TF_USE_LEGACY_KERAS=1" in c for c in raw["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        [start] = [c for c in raw[key] if "ray start" in c]
        assert "TF_USE_LEGACY_KERAS=1" in start.split("ray start")[0], key


def test_token_auth_on_every_node(raw):
    assert raw["file_mounts"]["~/ray_auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        [start] = [c for c in raw[key] if "ray start" in c]
        before = start.split("ray start")[0]
        assert "RAY_AUTH_MODE=token" in before, key
        assert "RAY_AUTH_TOKEN_PATH=$HOME/ray_auth_token" in before, key


def test_project_is_shipped_and_installed(raw):
    assert raw["file_mounts"]["~/orchestrator"] == "."
    assert "pip install -e ~/orchestrator" in raw["setup_commands"]
    assert ".git" in raw["rsync_exclude"]
