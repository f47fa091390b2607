"""kwok: fake nodes (and their pods' lifecycle) for scale, beside cluster a's real node.

kwok manages only nodes annotated kwok.x-k8s.io/node=fake, so the real node stays its
kubelet's; the taint keeps every pod that does not ask for a fake node off them.
"""

from __future__ import annotations

import json

from apiserver import kubectl
from layout import CLUSTERS, KWOK_ANNOTATION, KWOK_BIN, KWOK_POD_CIDR, KWOK_STAGES, cdir, kubeconfig
from processes import start


def start_kwok(cluster: str) -> None:
    c = CLUSTERS[cluster]
    cfg = cdir(cluster) / "kwok.yaml"
    # An explicit config so a developer's ~/.kwok/kwok.yaml never leaks in, holding the
    # node/pod lifecycle Stages build.sh kept from kwok's own module.
    # kwok applies its option defaults only when no config file sets options, so the
    # ones it needs are spelled out.
    options = {"podPlayStageParallelism": 8, "nodePlayStageParallelism": 4, "nodeLeaseParallelism": 4,
               "nodeLeaseDurationSeconds": 40, "podsOnNodeSyncParallelism": 2,
               "enablePodsOnNodeSyncListPager": True, "enablePodsOnNodeSyncStreamWatch": False,
               "enableDebuggingHandlers": True, "enableContentionProfiling": False,
               "enableProfilingHandler": False}
    docs = [json.dumps({"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
                        "options": options}) + "\n"]
    docs += [p.read_text() for p in sorted(KWOK_STAGES.glob("*.yaml"))]
    cfg.write_text("---\n".join(docs))
    start(cluster, "kwok", [
        str(KWOK_BIN), f"--kubeconfig={kubeconfig(cluster)}", f"--config={cfg}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
        f"--cidr={KWOK_POD_CIDR}",
        # Fake nodes advertise kwok's own loopback server, so a stray `kubectl logs` on a
        # kwok pod goes to kwok instead of some address off this machine.
        "--node-ip=127.0.0.1", f"--node-port={c['kwok']}", f"--server-address=127.0.0.1:{c['kwok']}",
    ])


def kwok_node_name(cluster: str, i: int) -> str:
    return f"kwok-{cluster}-{i}"


def reconcile_kwok_nodes(cluster: str, count: int) -> list[str]:
    """Exactly `count` fake nodes: create the missing, delete the surplus."""
    want = [kwok_node_name(cluster, i) for i in range(count)]
    items = []
    for name in want:
        items.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok",
                           "cairn.dev/node-kind": "kwok"},
            },
            # Only workloads that ask for a fake node (by toleration) land on one.
            "spec": {"taints": [{"key": KWOK_ANNOTATION[0], "value": KWOK_ANNOTATION[1],
                                 "effect": "NoSchedule"}]},
        })
    if items:
        kubectl(cluster, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                               "items": items}))
    have = kubectl(cluster, "get", "nodes", "-l", "type=kwok", "-o",
                   "jsonpath={.items[*].metadata.name}").stdout.split()
    extra = [n for n in have if n not in want]
    if extra:
        kubectl(cluster, "delete", "node", *extra, "--wait=false")
    return want

