#!/usr/bin/env python3
"""cairn's test Kubernetes clusters: bring up, tear down, report.

Two clusters, both on loopback, both built from source by build.sh:

  a  etcd + kube-apiserver + kube-controller-manager + kube-scheduler,
     ONE real node (kubelet -> containerd -> runc, CNI bridge, cgroupfs driver on
     cgroup v1) and N kwok fake nodes (kwok manages only nodes annotated
     kwok.x-k8s.io/node=fake, so the real node stays its kubelet's).
  b  a second control plane with kwok nodes only, so "production" and "test" are
     really different clusters.

Used as `tests/cluster/up [--kwok-nodes N]`, `tests/cluster/down`, `tests/cluster/status`.
Everything is idempotent: `up` starts what is not running, `down` stops what is.
All state lives outside the repo (see README.md). Python 3.11 standard library only,
so it runs before any virtualenv exists.

This file is the command line; each component has a module of its own beside it:
layout (paths, versions, ports), processes (pid files, start/stop, waits), probes,
pki, etcd, apiserver, controllers (controller-manager, scheduler), kwok, node
(cgroups, bridge), containerd (+ images), kubelet (+ kube-proxy), lifecycle (up, down),
status.

Exit codes: 0 ok, 1 failure, 3 this machine cannot run the cluster (not root, tools
or packages missing): the pytest fixture turns 3 into a skip.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys

# The sibling modules are imported by their plain names, as a script's own directory is
# on sys.path; except under `python3 -P` / PYTHONSAFEPATH, hence the explicit entry.
_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from layout import CLUSTERS, EXIT_UNSUPPORTED, Unsupported, log  # noqa: E402
from lifecycle import down, ensure_binaries, preflight, up  # noqa: E402
from status import print_status, status  # noqa: E402


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    ap = argparse.ArgumentParser(prog="tests/cluster/<cmd>", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build if needed, start everything, wait until ready")
    p_up.add_argument("--kwok-nodes", type=int, default=None,
                      help=f"fake nodes in cluster a (default {CLUSTERS['a']['kwok_nodes']})")
    p_up.add_argument("--kwok-nodes-b", type=int, default=None,
                      help=f"fake nodes in cluster b (default {CLUSTERS['b']['kwok_nodes']})")
    p_down = sub.add_parser("down", help="stop everything and remove its state")
    p_down.add_argument("--keep-state", action="store_true", help="keep etcd data, certificates and logs")
    p_st = sub.add_parser("status", help="what runs, its memory, whether it is healthy (exit 1 if not)")
    p_st.add_argument("--json", action="store_true")
    sub.add_parser("build", help="only build (or find cached) binaries")
    args = ap.parse_args()
    try:
        if args.cmd == "up":
            info = up(args.kwok_nodes, args.kwok_nodes_b)
            print(json.dumps(info["clusters"], indent=2))
        elif args.cmd == "down":
            if os.geteuid() != 0:
                raise Unsupported("must run as root")
            down(args.keep_state)
        elif args.cmd == "status":
            st = status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                print_status(st)
            return 0 if st["healthy"] else 1
        elif args.cmd == "build":
            preflight()
            ensure_binaries()
    except Unsupported as e:
        log(f"cannot run the test cluster on this machine: {e}")
        return EXIT_UNSUPPORTED
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        log(f"{args.cmd} failed: {e}" + (f"\n{detail}" if detail else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
