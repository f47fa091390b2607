"""etcd: each cluster's store, on loopback, a throwaway (no fsync)."""

from __future__ import annotations

from layout import CLUSTERS, ETCD_BIN, cdir
from probes import http_get
from processes import start


def start_etcd(cluster: str) -> None:
    c = CLUSTERS[cluster]
    start(cluster, "etcd", [
        str(ETCD_BIN), f"--name=cairn-{cluster}", f"--data-dir={cdir(cluster) / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{c['etcd']}",
        f"--advertise-client-urls=http://127.0.0.1:{c['etcd']}",
        f"--listen-peer-urls=http://127.0.0.1:{c['etcd_peer']}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{c['etcd_peer']}",
        f"--initial-cluster=cairn-{cluster}=http://127.0.0.1:{c['etcd_peer']}",
        # A throwaway test store: durability is not worth the disk I/O shared machines pay.
        "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=2147483648",
    ])


def etcd_healthy(cluster: str) -> bool:
    return http_get(f"http://127.0.0.1:{CLUSTERS[cluster]['etcd']}/health")[0] == 200
