"""What the balancer (balancer.py) learns from the state directory, and how the agent makes one.

Readiness comes from each instance's ``status.json`` (its supervisor's) and its app's pid, the
same truth ``observe`` answers from, so a readiness flip (an unhealthy instance) takes the instance out of rotation within one scan, and
a restarted agent finds every listener and backend again without any memory of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from cairn.procs import alive
from cairn.runtime import EnvRef, Phase
from cairn.runtimes.local.balancer import POLICIES, Balancer, Seen
from cairn.runtimes.local.state import all_instance_dirs, read_json, retiring

HOST_ENV = "CAIRN_TRAFFIC_HOST"  # where listeners bind; loopback unless the operator opens it up
POLICY_ENV = "CAIRN_TRAFFIC_POLICY"


def scan(state: Path) -> list[Seen]:
    found = []
    for directory in all_instance_dirs(state):
        config = read_json(directory / "config.json")
        if not config:
            continue
        ports = {p["host_port"]: p["container_port"] for p in config["spec"].get("ports", []) if p.get("host_port")}
        if not ports:
            continue
        status = read_json(directory / "status.json") or {}
        ready = (bool(status.get("ready")) and status.get("phase") == str(Phase.RUNNING)
                 and alive(status.get("app_pid"), status.get("app_start")) and not retiring(directory))
        cluster, app, environment = directory.parts[-5:-2]
        found.append(Seen(key=str(directory), env=EnvRef(cluster, app, environment), name=config["instance"],
                          address=config["address"], ready=ready, ports=ports))
    return found


def balancer(state: Path) -> Balancer:
    policy = os.environ.get(POLICY_ENV) or POLICIES[0]
    return Balancer(lambda: scan(state), host=os.environ.get(HOST_ENV) or "127.0.0.1", policy=policy)
