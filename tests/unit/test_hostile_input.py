"""Hostile input, class by class: the file itself, exact names, finite numbers, environment
values, normalised paths and host-path roots, and every name argument of the command line.

Each refusal is a ConfigError (or, on the command line, exit 2) naming the field or argument, the
value and the fix; nothing here needs the platform, because every check runs before anything is
read from it or stored.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from cairn.config import ClusterSpec
from cairn.configfile import MAX_FILE_BYTES, check_references, load_data, load_file, load_text
from cairn.errors import ConfigError
from cairn.revision import Revision
from tests.hostile import mutated_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shop.yaml"
ENV = "apps[shop-api].environments.production"


def base() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def prod(data: dict[str, Any]) -> dict[str, Any]:
    return data["apps"][0]["environments"]["production"]


def refusal(load: Callable[[], Any]) -> tuple[str, Any, str]:
    with pytest.raises(ConfigError) as info:
        load()
    assert len(info.value.problems) >= 1
    return info.value.problems[0]


# --- the file itself -------------------------------------------------------------------------

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize(("text", "where", "value", "fix"), [
    pytest.param("clusters: []\napps: []\nclusters: []\n", "line 3, column 1", "clusters", "duplicate key (first given at line 1)",
                 id="a key given twice in one mapping is refused naming the key and both lines"),
    pytest.param("apps:\n  - name: a\n    name: b\n", "line 3, column 5", "name", "duplicate key (first given at line 2)",
                 id="a duplicate key deep in the file is refused at its own line"),
    pytest.param(BOMB, "the file", "over 100000 nodes", "anchors and aliases",
                 id="an alias bomb of a few hundred bytes is refused before it is expanded"),
    pytest.param("a: &a [*a]\n", "line 1, column 4", "YAML", "recursive",
                 id="an alias inside the node it names is refused"),
    pytest.param("a: " + "[" * 200_000 + "]" * 200_000, "line 1, column 67", "YAML", "nests deeper than 64 levels",
                 id="nesting past 64 levels is refused where it passes the limit"),
    pytest.param("apps: " + "9" * 5000 + "\n", "the file", "YAML", "quote it",
                 id="an integer past Python's digit limit is refused, not a traceback"),
    pytest.param("a: 2024-13-01\n", "the file", "YAML", "month must be in 1..12",
                 id="an impossible date is refused, not a traceback"),
    pytest.param("a: b\n" * (MAX_FILE_BYTES // 5 + 1), "file", f"{5 * (MAX_FILE_BYTES // 5 + 1)} characters", "at most 1048576",
                 id="text over 1 MiB is refused before it is parsed"),
])
def test_the_file_itself_is_refused_with_its_own_message(text: str, where: str, value: Any, fix: str) -> None:
    got = refusal(lambda: load_text(text))
    assert got[0] == where and got[1] == value and fix in got[2], got


def test_merge_keys_may_override_what_they_merge() -> None:
    """YAML's merge key repeats keys on purpose: it is not a duplicate key."""
    text = ("clusters: [{name: local-a}, {name: local-b}]\n"
            "apps:\n"
            "  - name: a\n"
            "    environments:\n"
            "      production: &p {cluster: local-a, image: 'cairn/python:3.11', instances: 2, cpu: 0.5, memory_mb: 64}\n"
            "      test: {<<: *p, cluster: local-b}\n")
    envs = load_text(text).apps[0].environments
    assert (envs["test"].cluster, envs["test"].memory_mb) == ("local-b", 64)


def test_a_file_not_utf8_is_refused_naming_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("clusters: []\n# caf\u00e9\n".encode("latin-1"))
    field, value, fix = refusal(lambda: load_file(path))
    assert (field, value) == ("file", str(path)) and "not UTF-8: byte 18 (line 2)" in fix, fix


def test_a_huge_file_is_refused_from_its_size_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as f:
        f.truncate(64 * 1024**3)  # sparse: 64 GiB that reading would take minutes and the memory of the machine
    field, value, fix = refusal(lambda: load_file(path))
    assert (field, value) == ("file", str(path)) and f"is {64 * 1024**3} bytes" in fix and "at most 1048576" in fix


# --- config values: names, numbers, environment values, paths ---------------------------------

def _set(path: str, value: Any, *, where: Callable[[dict[str, Any]], dict[str, Any]] = prod) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node: Any = where(data)
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[leaf] = value

    return mutate


def _app(data: dict[str, Any]) -> dict[str, Any]:
    return data["apps"][0]


def _cluster(data: dict[str, Any]) -> dict[str, Any]:
    return data["clusters"][0]


K8S = {"name": "k8s", "runtime": "kubernetes", "kubeconfig_secret": "kc", "namespace": "shop"}

VALUES = [
    # names are exact
    pytest.param(_set("name", "shop-api\n", where=_app), "apps[shop-api\n].name", "DNS-1123",
                 id="an app name with a trailing newline is refused ($ would have matched before it)"),
    pytest.param(_set("name", "shöp", where=_app), "apps[shöp].name", "DNS-1123", id="a non-ASCII app name is refused"),
    pytest.param(_set("name", "shop api", where=_app), "apps[shop api].name", "DNS-1123", id="an app name with a space is refused"),
    pytest.param(_set("name", "local-a\n", where=_cluster), "clusters[local-a\n].name", "DNS-1123",
                 id="a cluster name with a trailing newline is refused"),
    pytest.param(_set("secret_env", {"DB_PASSWORD": "shop-db\n"}), f"{ENV}.secret_env", "must name a secret",
                 id="a secret name with a trailing newline is refused"),
    pytest.param(_set("image_pull_secret", "login\n"), f"{ENV}.image_pull_secret", "must name a secret",
                 id="a pull secret name with a trailing newline is refused"),
    pytest.param(_set("ports", [{"container_port": 8080, "name": "http\n"}]), f"{ENV}.ports[http\n].name", "DNS-1123",
                 id="a port name with a trailing newline is refused"),
    pytest.param(_set("ports", [{"container_port": 8080, "name": "a-very-long-port"}]), f"{ENV}.ports[a-very-long-port].name", "at most 15",
                 id="a port name over 15 characters is refused"),
    pytest.param(lambda d: d["clusters"].append({**K8S, "namespace": "shop\n"}), "clusters[k8s].namespace", "DNS-1123",
                 id="a namespace with a trailing newline is refused"),
    # numbers are finite and sane
    pytest.param(_set("cpu", float("inf")), f"{ENV}.cpu", "finite", id="infinite cpu is refused"),
    pytest.param(_set("cpu", float("nan")), f"{ENV}.cpu", "finite", id="nan cpu is refused (it passes every comparison)"),
    pytest.param(_set("cpu", "inf"), f"{ENV}.cpu", "finite", id="cpu given as the text inf is refused"),
    pytest.param(_set("cpu", 5e9), f"{ENV}.cpu", "at most 1024", id="cpu past 1024 cores is refused"),
    pytest.param(_set("instances", 10**6), f"{ENV}.instances", "at most 1000", id="a million instances are refused"),
    pytest.param(_set("memory_mb", 10**30), f"{ENV}.memory_mb", "at most", id="memory past int64 is refused"),
    pytest.param(_set("health_check.period_s", float("nan")), f"{ENV}.health_check.period_s", "finite",
                 id="a nan probe period is refused"),
    pytest.param(_set("health_check.timeout_s", float("inf")), f"{ENV}.health_check.timeout_s", "finite",
                 id="an infinite probe timeout is refused"),
    pytest.param(_set("health_check.initial_delay_s", float("inf")), f"{ENV}.health_check.initial_delay_s", "finite",
                 id="an infinite initial delay is refused"),
    pytest.param(_set("health_check.initial_delay_s", 1e7), f"{ENV}.health_check.initial_delay_s", "at most 3600",
                 id="an initial delay past an hour is refused"),
    pytest.param(_set("health_check.failure_threshold", 10**9), f"{ENV}.health_check.failure_threshold", "at most 1000",
                 id="a failure threshold past 1000 is refused"),
    pytest.param(_set("lifecycle.termination_grace_period_s", float("inf")), f"{ENV}.lifecycle.termination_grace_period_s", "finite",
                 id="an infinite grace period is refused"),
    pytest.param(_set("lifecycle.termination_grace_period_s", 1e300), f"{ENV}.lifecycle.termination_grace_period_s", "at most 3600",
                 id="a grace period a kubelet would overflow on is refused"),
    pytest.param(lambda d: d["clusters"].append({**K8S, "drain_s": float("nan")}), "clusters[k8s].drain_s", "finite",
                 id="a nan drain is refused"),
    pytest.param(_set("source", {"repo": "/srv/git/a", "build_command": "make", "output_dir": "dist", "timeout_s": float("inf")},
                      where=_app), "apps[shop-api].source.timeout_s", "finite", id="an infinite build timeout is refused"),
    pytest.param(_set("files", [{"path": "/etc/shop/big", "content": "x" * (1024 * 1024 + 1)}]), f"{ENV}.files[0].content",
                 "1 MiB, a ConfigMap's limit", id="a file mount's content over 1 MiB is refused"),
    # environment values
    pytest.param(_set("env", {"LOG_LEVEL": "in\x00fo"}), f"{ENV}.env", "must not contain a NUL byte", id="a NUL in an env value is refused"),
    pytest.param(_set("env", {"LOG-LEVEL": "info"}), f"{ENV}.env", "not an environment variable name",
                 id="an env name with a dash is refused"),
    pytest.param(_set("env", {"1LEVEL": "info"}), f"{ENV}.env", "not an environment variable name",
                 id="an env name starting with a digit is refused"),
    pytest.param(_set("env", {"LEVEL\n": "info"}), f"{ENV}.env", "not an environment variable name",
                 id="an env name with a trailing newline is refused"),
    pytest.param(_set("env", {"LÉVEL": "info"}), f"{ENV}.env", "not an environment variable name",
                 id="a non-ASCII env name is refused"),
    pytest.param(_set("lifecycle.pre_stop", {"exec": {"command": ["sh", "-c", "a\x00b"]}}), f"{ENV}.lifecycle.pre_stop.exec.command[2]",
                 "NUL", id="a NUL in a command argument is refused"),
    pytest.param(_set("health_check.http.path", "/healthz\r\nX-Evil: 1"), f"{ENV}.health_check.http.path", "without spaces",
                 id="a probe path that would split the request line is refused"),
    # paths are normalised, then checked
    pytest.param(_set("deploy_root", "/./etc"), f"{ENV}.deploy_root", "system directory /etc", id="a deploy root of /./etc is refused"),
    pytest.param(_set("deploy_root", "//usr"), f"{ENV}.deploy_root", "system directory /usr", id="a deploy root of //usr is refused"),
    pytest.param(_set("deploy_root", "/bin/"), f"{ENV}.deploy_root", "system directory /bin", id="a deploy root of /bin/ is refused"),
    pytest.param(_set("deploy_root", "/.//./"), f"{ENV}.deploy_root", '"/" itself', id="a deploy root that resolves to / is refused"),
    pytest.param(_set("dirs", [{"path": "/proc/sys", "host_path": "/tmp/cairn-demo/x"}]), f"{ENV}.dirs[0].path", "under /proc",
                 id="a mount under the container's /proc is refused"),
    pytest.param(_set("dirs", [{"path": "/data", "host_path": "/etc//ssh"}]), f"{ENV}.dirs[0].host_path", "system directory /etc",
                 id="a host path in the node's /etc is refused however it is spelled"),
    pytest.param(_set("dirs", [{"path": "/data", "host_path": "/./"}]), f"{ENV}.dirs[0].host_path", '"/" itself',
                 id="a host path of / is refused"),
    pytest.param(_set("dirs", [{"path": "/data", "host_path": "/tmp/cairn-demo/../../etc"}]), f"{ENV}.dirs[0].host_path", '".."',
                 id="a host path climbing out of its root is refused"),
    pytest.param(_set("dirs", [{"path": "/data", "host_path": "/srv/elsewhere"}]), f"{ENV}.dirs[0].host_path",
                 "not under an allowed root (one of /tmp/cairn-demo)", id="a host path outside the cluster's allowed roots is refused"),
    pytest.param(_set("allowed_host_paths", ["/etc"], where=_cluster), "clusters[local-a].allowed_host_paths[0]",
                 "system directory /etc", id="an allowed root in a system directory is refused"),
    pytest.param(_set("allowed_host_paths", ["/"], where=_cluster), "clusters[local-a].allowed_host_paths[0]", '"/" itself',
                 id="allowing the whole node is refused"),
]


@pytest.mark.parametrize(("mutate", "field", "fix"), VALUES)
def test_a_hostile_value_is_refused_naming_the_field(mutate: Callable[[dict[str, Any]], None], field: str, fix: str) -> None:
    data = base()
    mutate(data)
    got = refusal(lambda: load_data(data, known_clusters=[]))
    assert got[0] == field and fix in got[2], got


def test_the_example_and_normalised_spellings_load(tmp_path: Path) -> None:
    data = base()
    prod(data)["deploy_root"] = "/acs/./code/"
    prod(data)["dirs"] = [{"path": "//acs//logs", "host_path": "/tmp/cairn-demo//shop/./logs"}]
    env = load_data(data, known_clusters=[]).apps[0].environments["production"]
    assert (env.deploy_root, env.dirs[0].path, env.dirs[0].host_path) == ("/acs/code", "/acs/logs", "/tmp/cairn-demo/shop/logs")


def test_a_version_with_a_trailing_newline_is_refused() -> None:
    env = load_data(base(), known_clusters=[]).apps[0].environments["production"]
    Revision(app="shop-api", environment="production", deploy_type="image", version="v1", spec=env)
    with pytest.raises(ValueError, match="a version is 1-63"):
        Revision(app="shop-api", environment="production", deploy_type="image", version="v1\n", spec=env)


# --- host paths against the cluster that runs them ---------------------------------------------

def _with_dir(host_path: str, cluster: dict[str, Any]) -> dict[str, Any]:
    data = base()
    data["clusters"][0] = {"name": "local-a", **cluster}
    prod(data)["dirs"] = [{"path": "/acs/logs", "host_path": host_path}]
    return data


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAIRN_DATA_ROOT", raising=False)
    monkeypatch.delenv("CAIRN_AGENT_STATE", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize(("host_path", "cluster", "fix"), [
    pytest.param("{home}/data/shop", {"runtime": "local"}, None, id="a local cluster allows its data root by default"),
    pytest.param("{home}/agent/volumes/shop", {"runtime": "local"}, None, id="a local cluster allows the agent's volumes by default"),
    pytest.param("{home}/agent/state", {"runtime": "local"}, "cairn's own state",
                 id="the rest of the agent's state is refused: it holds other instances' files"),
    pytest.param("{home}", {"runtime": "local", "allowed_host_paths": ["{home}"]}, "cairn's own state",
                 id="cairn's home is refused even when a root allows it"),
    pytest.param("{tmp}/elsewhere", {"runtime": "local"}, "not under an allowed root",
                 id="a local cluster refuses a path outside its defaults"),
    pytest.param("{tmp}/elsewhere", {**K8S, "name": "local-a"}, "this cluster allows no host paths",
                 id="a kubernetes cluster allows no host path by default"),
    pytest.param("{tmp}/ok/x", {**K8S, "name": "local-a", "allowed_host_paths": ["{tmp}/ok"]}, None,
                 id="a kubernetes cluster allows what it lists"),
    pytest.param("{tmp}/ok/link/ssh", {"runtime": "local", "allowed_host_paths": ["{tmp}/ok"]}, "resolves through a symlink to /etc",
                 id="on a local cluster a symlink under a root may not lead out of it"),
])
def test_host_paths_lie_under_the_cluster_roots(home: Path, tmp_path: Path, host_path: str, cluster: dict[str, Any],
                                               fix: str | None) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "link").symlink_to("/etc")
    spelled = {"home": str(home), "tmp": str(tmp_path)}
    cluster = {k: [r.format(**spelled) for r in v] if k == "allowed_host_paths" else v for k, v in cluster.items()}
    data = _with_dir(host_path.format(**spelled), cluster)
    if fix is None:
        load_data(data, known_clusters=[])
        return
    field, value, problem = refusal(lambda: load_data(data, known_clusters=[]))
    assert (field, value) == (f"{ENV}.dirs[0].host_path", host_path.format(**spelled)) and fix in problem, problem


def test_a_stored_cluster_judges_host_paths_by_its_own_roots() -> None:
    data = base()
    prod(data)["cluster"] = "stored"
    config = load_data(data)
    check_references(config, [ClusterSpec(name="stored", allowed_host_paths=["/tmp/cairn-demo"])])
    field, _, fix = refusal(lambda: check_references(config, [ClusterSpec(name="stored", allowed_host_paths=["/srv"])]))
    assert field == f"{ENV}.dirs[0].host_path" and "one of /srv" in fix
    # Known by name alone its roots are unknown: nothing is allowed rather than everything.
    field, _, fix = refusal(lambda: check_references(config, ["stored"]))
    assert field == f"{ENV}.dirs[0].host_path" and "allows no host paths" in fix


# --- the command line --------------------------------------------------------------------------

@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[None]:
    """The CLI's root callback writes its isolation into os.environ: restored after each case."""
    saved = copy.deepcopy(dict(os.environ))
    os.environ["CAIRN_HOME"] = str(tmp_path / "no-platform")
    for name in ("PREFECT_API_URL", "CAIRN_API_URL"):  # the session's server: these cases must reach no platform
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


ARGS = [
    pytest.param(["release", "create", "shop api", "production", "-v", "v1"], "APP", "'shop api'",
                 id="an app with a space is refused, not reported as a platform that is down"),
    pytest.param(["release", "create", "shöp", "production", "-v", "v1"], "APP", "'shöp'", id="a non-ASCII app is refused"),
    pytest.param(["release", "create", "shop-api", "production", "-v", "v1\n"], "'--version' / '-v'", "'v1\\n'",
                 id="a version with a trailing newline is refused"),
    pytest.param(["release", "create", "shop-api", "prod uction", "-v", "v1"], "ENV", "'prod uction'",
                 id="an environment with a space is refused"),
    pytest.param(["release", "list", "--app", "../x"], "'--app'", "'../x'", id="an app filter with a path in it is refused"),
    pytest.param(["release", "show", "zz"], "ID", "'zz'", id="an order id that is not hex is refused"),
    pytest.param(["release", "schedule", "Shop", "production", "-v", "v1", "--cron", "0 2 * * *"], "APP ENV", "'Shop'",
                 id="a schedule's app is checked like any other app"),
    pytest.param(["env", "show", "shop-api", "test\n"], "ENV", "'test\\n'", id="an environment with a newline is refused"),
    pytest.param(["instances", "shop-api\n", "production"], "APP", "'shop-api\\n'", id="an app with a trailing newline is refused"),
    pytest.param(["logs", "shop-api", "production", "a b"], "INSTANCE", "'a b'", id="an instance with a space is refused"),
    pytest.param(["events", "shop-api", "production", "-i", "x/../y"], "'--instance' / '-i'", "'x/../y'",
                 id="an instance option with a path in it is refused"),
    pytest.param(["exec", "shop-api", "production", "shop-api-production-0\n", "--", "true"], "INSTANCE", "'shop-api-production-0\\n'",
                 id="exec refuses an instance with a trailing newline"),
    pytest.param(["secret", "set", "db pass"], "NAME", "'db pass'", id="a secret name with a space is refused"),
    pytest.param(["package", "add", "shop-api", "1.0 beta", "."], "VERSION", "'1.0 beta'", id="a package version with a space is refused"),
    pytest.param(["package", "list", "../../etc"], "APP", "'../../etc'", id="a package app that would climb the store is refused"),
    pytest.param(["build", "shop-api", "--release", "Production"], "'--release'", "'Production'",
                 id="a build's release environment is checked"),
]


@pytest.mark.parametrize(("args", "argument", "shown"), ARGS)
def test_a_bad_name_argument_exits_2_naming_it_before_any_platform_call(cli_env: None, args: list[str], argument: str,
                                                                        shown: str) -> None:
    from typer.testing import CliRunner

    from cairn.cli.main import app

    result = CliRunner().invoke(app, args, input="")
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code == 2, text
    assert "Invalid value for" in text and argument in text, text
    assert shown in text and "Traceback" not in text and "platform" not in text, text
    assert isinstance(result.exception, SystemExit), result.exception


def test_a_well_formed_name_gets_past_the_check(cli_env: None) -> None:
    """The same commands with good names reach the platform lookup: no false refusals."""
    from typer.testing import CliRunner

    from cairn.cli.main import app

    result = CliRunner().invoke(app, ["release", "create", "shop-api", "production", "-v", "v1"])
    assert result.exit_code == 1 and "no cairn platform is up" in result.output, result.output


# --- the property: whatever the file says, a ConfigError or a configuration -------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_example())
def test_a_mutated_example_is_a_configuration_or_a_config_error(text: str) -> None:
    """The validation entry point of `cairn apply` (the file, then references and host paths)
    never raises anything but a ConfigError, and every problem names a field and a fix."""
    try:
        load_text(text, known_clusters=[])
    except ConfigError as exc:
        assert exc.problems and all(field and fix for field, _, fix in exc.problems), exc.problems
