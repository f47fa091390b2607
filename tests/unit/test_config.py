"""Every refusal of the README's "Configuration rules": the message names the field path, the value and the fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cairn.config import ClusterSpec
from cairn.configfile import check_references, load_data, load_file, load_text
from cairn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shop.yaml"
ENV = "apps[shop-api].environments.production"


def base() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def prod(data: dict) -> dict:
    return data["apps"][0]["environments"]["production"]


def test_example_loads_and_references_resolve() -> None:
    config = load_file(EXAMPLE, known_clusters=[])
    assert [c.name for c in config.clusters] == ["local-a", "local-b"]
    app = config.apps[0]
    assert app.environments["production"].instances == 4
    assert app.environments["production"].health_check.http.port == 8080


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        node = prod(data)
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return mutate


CASES: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("same cluster", lambda d: d["apps"][0]["environments"]["test"].update(cluster="local-a"),
     "apps[shop-api].environments.test.cluster", "different clusters"),
    ("one instance", _set("instances", 1), f"{ENV}.instances", "at least 2"),
    ("a negative uid", _set("user", {"uid": -1, "gid": 0}), f"{ENV}.user.uid", "at least 0"),
    ("a uid as text", _set("user", {"uid": "1000", "gid": 1000}), f"{ENV}.user.uid", "whole number"),
    ("a uid past 2^31", _set("user", {"uid": 2**31, "gid": 0}), f"{ENV}.user.uid", "at most 2147483647"),
    ("fractional memory", _set("memory_mb", 256.5), f"{ENV}.memory_mb", "whole number"),
    ("memory as text", _set("memory_mb", "256Mi"), f"{ENV}.memory_mb", "whole number"),
    ("memory below floor", _set("memory_mb", 8), f"{ENV}.memory_mb", "at least 32"),
    ("zero cpu", _set("cpu", 0), f"{ENV}.cpu", "positive"),
    ("negative cpu", _set("cpu", -1), f"{ENV}.cpu", "positive"),
    ("bad app name", lambda d: d["apps"][0].update(name="Shop_API"), "apps[Shop_API].name", "DNS-1123"),
    ("bad cluster name", lambda d: d["clusters"][0].update(name="local.a"), "clusters[local.a].name", "DNS-1123"),
    ("code-package without deploy root", lambda d: prod(d).pop("deploy_root"), f"{ENV}.deploy_root", "/acs/code"),
    ("relative deploy root", _set("deploy_root", "acs/code"), f"{ENV}.deploy_root", "absolute"),
    ("dotdot in mount", _set("dirs", [{"path": "/acs/../etc", "host_path": "/tmp/x"}]), f"{ENV}.dirs[0].path", '".."'),
    ("relative host path", _set("dirs", [{"path": "/data", "host_path": "data"}]), f"{ENV}.dirs[0].host_path", "absolute"),
    ("two mounts on one path", _set("files", [{"path": "/acs/logs", "content": "x"}]), f"{ENV}.dirs[0].path", "own path"),
    ("file on deploy root", _set("files", [{"path": "/acs/code/", "content": "x"}]), f"{ENV}.files[0].path", "own path"),
    ("port out of range", _set("ports", [{"container_port": 70000}]), f"{ENV}.ports[0].container_port", "at most 65535"),
    ("port zero", _set("ports", [{"container_port": 0}]), f"{ENV}.ports[0].container_port", "at least 1"),
    ("repeated port", _set("ports", [{"container_port": 8080}, {"container_port": 8080}]), f"{ENV}.ports[1].container_port", "twice"),
    ("http check on unmapped port", _set("health_check.http.port", 9090), f"{ENV}.health_check.http.port", "not a mapped container port"),
    ("failure threshold 0", _set("health_check.failure_threshold", 0), f"{ENV}.health_check.failure_threshold", "at least 1"),
    ("success threshold 0", _set("health_check.success_threshold", 0), f"{ENV}.health_check.success_threshold", "at least 1"),
    ("negative delay", _set("health_check.initial_delay_s", -1), f"{ENV}.health_check.initial_delay_s", "at least 0"),
    ("negative grace", _set("lifecycle.termination_grace_period_s", -5), f"{ENV}.lifecycle.termination_grace_period_s", "at least 0"),
    ("secret names nothing", _set("secret_env", {"DB_PASSWORD": ""}), f"{ENV}.secret_env", "must name a secret"),
    ("unknown key", _set("imgae", "x"), f"{ENV}.imgae", "did you mean 'image'"),
    ("unknown top key", lambda d: d.update(app=[]), "app", "did you mean 'apps'"),
    ("unknown nested key", _set("health_check.perod_s", 1), f"{ENV}.health_check.perod_s", "did you mean 'period_s'"),
    ("both http and exec", _set("health_check.exec", {"command": ["true"]}), f"{ENV}.health_check.http", "exactly one"),
    ("bad env name", _set("env", {"1BAD": "x"}), f"{ENV}.env", "environment variable name"),
    ("bad image", _set("image", "Cairn/Python"), f"{ENV}.image", "image reference"),
    ("unknown environment", lambda d: d["apps"][0]["environments"].update(staging=d["apps"][0]["environments"]["test"]),
     "apps[shop-api].environments.staging", "production"),
    ("duplicate cluster", lambda d: d["clusters"].append({"name": "local-a"}), "clusters[local-a].name", "defined twice"),
]


@pytest.mark.parametrize(("mutate", "field", "fix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals_name_field_value_and_fix(mutate: Callable[[dict], None], field: str, fix: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        load_data(data, known_clusters=[])
    fields = [p[0] for p in info.value.problems]
    assert field in fields, f"{field} not among {fields}"
    problem = next(p for p in info.value.problems if p[0] == field)
    assert fix in problem[2], problem
    assert field in str(info.value)


def test_unknown_cluster_suggests_the_close_one() -> None:
    data = base()
    prod(data)["cluster"] = "locl-a"
    with pytest.raises(ConfigError) as info:
        load_data(data, known_clusters=[])
    assert info.value.problems == [(f"{ENV}.cluster", "locl-a", "unknown cluster; did you mean 'local-a'?")]


def test_a_stored_cluster_counts_as_known() -> None:
    data = base()
    prod(data)["cluster"] = "prod-k8s"
    config = load_data(data)
    with pytest.raises(ConfigError):
        check_references(config, [])
    # Known by its stored spec: its allowed_host_paths judge the environment's host path.
    check_references(config, [ClusterSpec(name="prod-k8s", allowed_host_paths=["/tmp/cairn-demo"])])


def test_several_problems_are_reported_together() -> None:
    data = base()
    prod(data).update(instances=1, cpu=0, memory_mb=1)
    with pytest.raises(ConfigError) as info:
        load_data(data)
    assert {p[0] for p in info.value.problems} == {f"{ENV}.instances", f"{ENV}.cpu", f"{ENV}.memory_mb"}


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("apps:\n  - name: [unclosed\n")
    assert "line" in info.value.problems[0][0]


def test_config_is_immutable() -> None:
    config = load_file(EXAMPLE)
    with pytest.raises(ValidationError, match="frozen"):
        config.apps[0].environments["production"].instances = 9  # type: ignore[misc]


def test_kubernetes_cluster_needs_its_kubeconfig_secret() -> None:
    data = copy.deepcopy(base())
    data["clusters"].append({"name": "prod-k8s", "runtime": "kubernetes"})
    with pytest.raises(ConfigError) as info:
        load_data(data)
    assert info.value.problems[0][0] == "clusters[prod-k8s].kubeconfig_secret"


def test_service_type_and_drain_belong_to_kubernetes_clusters() -> None:
    data = copy.deepcopy(base())
    data["clusters"].append({"name": "prod-k8s", "runtime": "kubernetes", "kubeconfig_secret": "kc",
                             "service_type": "LoadBalancer", "drain_s": 5})
    cluster = load_data(data).cluster("prod-k8s")
    assert cluster is not None and (cluster.service_type, cluster.drain_s) == ("LoadBalancer", 5)
    data["clusters"][-1].update(service_type="Ingress", drain_s=-1)
    with pytest.raises(ConfigError) as info:
        load_data(data)
    assert {p[0] for p in info.value.problems} == {"clusters[prod-k8s].service_type", "clusters[prod-k8s].drain_s"}
    data = copy.deepcopy(base())
    data["clusters"][0]["service_type"] = "NodePort"
    with pytest.raises(ConfigError) as info:
        load_data(data)
    assert info.value.problems[0][0] == "clusters[local-a].service_type" and "runtime: kubernetes" in info.value.problems[0][2]
