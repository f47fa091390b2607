"""pytest plugin: the session-scoped `k8s_cluster` fixture.

Load it from tests/conftest.py with ``pytest_plugins = ["tests.cluster.fixture"]``.

The fixture reuses clusters that `tests/cluster/status` reports healthy, and otherwise
runs `tests/cluster/up` (which builds the binaries on a cold machine, printing its
progress). It does not tear the clusters down: the next run reuses them, and
`tests/cluster/down` (or `make test`, when it ends) removes them.

When this machine cannot run them (not root, packages or Go missing: `up` exits 3)
tests that use the fixture are skipped, or fail when CAIRN_REQUIRE_K8S=1. A cluster
that should come up but does not is always a failure.

Environment:
  CAIRN_REQUIRE_K8S=1       fail instead of skip when no cluster can run here
  CAIRN_K8S_KWOK_NODES=N    fake nodes in cluster a when the fixture starts it
  CAIRN_K8S_UP_TIMEOUT=S    limit for `up` including a cold build (default 3600)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.cluster import registries

HERE = pathlib.Path(__file__).resolve().parent
CLUSTER_PY = HERE / "cluster.py"
EXIT_UNSUPPORTED = 3


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    name: str
    kubeconfig: str
    context: str
    server: str
    real_nodes: list[str]
    kwok_nodes: list[str]


@dataclasses.dataclass(frozen=True)
class K8sClusters:
    """What tests need to reach both clusters. `a` has the real node, `b` is kwok only."""

    a: ClusterInfo
    b: ClusterInfo
    kubectl_path: str
    crictl_path: str
    containerd_socket: str
    images: dict[str, str]
    kwok_toleration: dict
    kwok_node_selector: dict[str, str]
    versions: dict[str, str]
    state_dir: str
    registry_hosts_dir: str  # containerd's config_path on the real node ("" on a cluster from before it)

    @property
    def kubeconfig_a(self) -> str:
        return self.a.kubeconfig

    @property
    def kubeconfig_b(self) -> str:
        return self.b.kubeconfig

    @property
    def context_a(self) -> str:
        return self.a.context

    @property
    def context_b(self) -> str:
        return self.b.context

    def cluster(self, name: str) -> ClusterInfo:
        return {"a": self.a, "b": self.b}[name]

    def pull_from(self, registry: str) -> None:
        """Let the real node's containerd pull from the loopback registry ``registry``
        (``127.0.0.1:PORT``) over plain HTTP; idempotent, no restart (registries.py)."""
        if not self.registry_hosts_dir:
            pytest.fail("the running test cluster was started before registry pulls existed "
                        "(its containerd has no config_path): tests/cluster/down, then tests/cluster/up", pytrace=False)
        registries.trust(pathlib.Path(self.registry_hosts_dir), registry)

    def kubectl(self, cluster: str, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl against cluster "a" or "b"; raises with kubectl's stderr on failure."""
        proc = subprocess.run([self.kubectl_path, f"--kubeconfig={self.cluster(cluster).kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def kubectl_json(self, cluster: str, *args: str) -> dict:
        return json.loads(self.kubectl(cluster, *args, "-o", "json").stdout)


def _from_info(info: dict) -> K8sClusters:
    cl = {name: ClusterInfo(name=name, **c) for name, c in info["clusters"].items()}
    return K8sClusters(
        a=cl["a"], b=cl["b"], kubectl_path=info["kubectl"], crictl_path=info["crictl"],
        containerd_socket=info["containerd_socket"], images=info["images"],
        kwok_toleration=info["kwok"]["toleration"], kwok_node_selector=info["kwok"]["node_selector"],
        versions=info["versions"], state_dir=str(pathlib.Path(info["clusters"]["a"]["kubeconfig"]).parents[1]),
        registry_hosts_dir=info.get("registry_hosts_dir", ""),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs the real test Kubernetes clusters of tests/cluster")


def _unavailable(reason: str) -> None:
    if os.environ.get("CAIRN_REQUIRE_K8S") == "1":
        pytest.fail(f"CAIRN_REQUIRE_K8S=1 but no test cluster: {reason}", pytrace=False)
    pytest.skip(f"no test Kubernetes cluster: {reason}")


def _status() -> dict | None:
    proc = subprocess.run([sys.executable, str(CLUSTER_PY), "status", "--json"], capture_output=True,
                          text=True, timeout=120)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


def _run_up(request: pytest.FixtureRequest) -> tuple[int, str]:
    """Run `up`, streaming its progress to the terminal (a cold build takes a while)."""
    argv = [sys.executable, str(CLUSTER_PY), "up"]
    if os.environ.get("CAIRN_K8S_KWOK_NODES"):
        argv += ["--kwok-nodes", os.environ["CAIRN_K8S_KWOK_NODES"]]
    timeout = float(os.environ.get("CAIRN_K8S_UP_TIMEOUT", "3600"))
    capman = request.config.pluginmanager.getplugin("capturemanager")
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with capman.global_and_fixture_disabled() if capman else _null():
        sys.stderr.write("\n[k8s_cluster] starting the test clusters: " + " ".join(argv[1:]) + "\n")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[") or "error" in line.lower():
                sys.stderr.write(line)
                sys.stderr.flush()
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"\n(k8s_cluster: `up` killed after {timeout:.0f}s)\n")
                break
        rc = proc.wait()
    return rc, "".join(lines[-60:])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest) -> K8sClusters:
    if sys.platform != "linux":
        _unavailable("needs Linux")
    if os.geteuid() != 0:
        _unavailable("needs root (kubelet, containerd, cgroups)")
    st = _status()
    if st and st.get("healthy") and st.get("info"):
        return _from_info(st["info"])
    rc, tail = _run_up(request)
    if rc == EXIT_UNSUPPORTED:
        _unavailable(tail.strip().splitlines()[-1] if tail.strip() else "tests/cluster/up exited 3")
    if rc != 0:
        pytest.fail(f"tests/cluster/up failed (exit {rc}):\n{tail}", pytrace=False)
    st = _status()
    if not (st and st.get("healthy") and st.get("info")):
        pytest.fail(f"tests/cluster/up succeeded but status is not healthy:\n{json.dumps(st, indent=2)}",
                    pytrace=False)
    return _from_info(st["info"])
