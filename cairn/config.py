"""The configuration users write: clusters, applications and their environments.

As pydantic models (the rules are listed in the README, "Configuration rules"). Every model refuses unknown keys (a typo must not pass
silently) and is frozen, so a loaded configuration is a value. Cross-field rules live in
``model_validator``s next to the fields they relate; rules across the whole file (unknown cluster,
production and test on one cluster) live on :class:`CairnConfig`.

Floors and defaults follow Kubernetes where it has one:

- ``memory_mb`` >= 32: below that no Python or JVM stack starts, and the kernel's OOM killer
  would turn a typo (``memory_mb: 4``) into a crash loop instead of an error.
- probe defaults are the kubelet's: period 10 s, timeout 1 s, success 1, failure 3.
- ``termination_grace_period_s`` defaults to 30 s, as ``terminationGracePeriodSeconds`` does.

One module over ~400 lines on purpose: it is one schema, read top to bottom as the reference of
what a configuration file may say, and its models refer to each other.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cairn.imageref import check_image
from cairn.naming import BLOCK_NAME as BLOCK_NAME  # re-exported: orders.requests spells it cairn.config.BLOCK_NAME
from cairn.naming import ENV_VAR as ENV_NAME  # noqa: F401 - the name callers knew
from cairn.naming import dns1123_problem, env_var_problem, secret_name_problem
from cairn.paths import absolute_path_problem, host_root_problem, local_host_roots, normalized

MEMORY_FLOOR_MB = 32
# Upper bounds. A ConfigMap (a file mount on kubernetes) holds at most 1 MiB; the rest are sane
# maxima, so a typo (cpu: 5e9) is an error at apply, not an int64 overflow in a pod's manifest.
FILE_CONTENT_MAX = 1024 * 1024
CPU_MAX = 1024.0
MEMORY_MAX_MB = 4 * 1024 * 1024
INSTANCES_MAX = 1000
PROBE_S_MAX = 3600.0
THRESHOLD_MAX = 1000
GRACE_MAX_S = 3600.0

EnvironmentName = Literal["production", "test"]
RuntimeKind = Literal["local", "kubernetes"]
DeployType = Literal["image", "code-package"]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Seconds = Annotated[float, Field(ge=0, le=PROBE_S_MAX)]
Threshold = Annotated[int, Field(strict=True, ge=1, le=THRESHOLD_MAX)]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
DRAIN_DEFAULT_S = 2.0
DRAIN_MAX_S = 300.0


class Spec(BaseModel):
    """Base of every configuration model: closed to unknown keys, immutable once loaded."""

    # allow_inf_nan=False: inf and nan pass every comparison a bound makes (nan >= 0 is False
    # yet nan < 0 is False too), so they are refused before any bound is read.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def refuse(field: str, value: object, fix: str) -> PydanticCustomError:
    """An error for a rule that spans fields: ``field`` (relative to the model) is what to fix.

    configfile.py appends ``field`` to pydantic's location, so the user reads
    ``apps[shop-api].environments.production.health_check.http.port`` rather than the model's path.
    """
    return PydanticCustomError("cairn", "{fix}", {"fix": fix, "field": field, "value": value})


def must_pass(value: str, problem: str | None) -> str:
    """``value``, or the ValueError pydantic reports as the field's problem."""
    if problem:
        raise ValueError(problem)
    return value


def _check_label(value: str) -> str:
    return must_pass(value, dns1123_problem(value))


def _check_abs(value: str) -> str:
    return normalized(must_pass(value, absolute_path_problem(value)))


class ClusterSpec(Spec):
    """Where an environment's instances run."""

    name: str = Field(title="Name", description="A DNS-1123 label naming the cluster.")
    runtime: RuntimeKind = Field("local", title="Runtime", description="`local` (supervised processes on this machine) or `kubernetes`.")
    kubeconfig_secret: str | None = Field(
        None, title="Kubeconfig secret", description="Name of the Prefect Secret block holding the kubeconfig (kubernetes only)."
    )
    context: str | None = Field(None, title="Context", description="Kubeconfig context to use; the current one when empty.")
    namespace: str | None = Field(None, title="Namespace", description="Kubernetes namespace for the apps (kubernetes only).")
    # How traffic enters a cluster and how fast its data plane forgets a pod are the cluster's
    # properties, not an app's (like the namespace's pod defaults); and a field here leaves
    # every revision's digest as it was.
    service_type: ServiceType = Field(
        "ClusterIP", title="Service type",
        description="Type of each environment's Service (kubernetes only): ClusterIP, NodePort or LoadBalancer.",
    )
    drain_s: Annotated[float, Field(ge=0, le=DRAIN_MAX_S)] | None = Field(
        None, title="Drain (s)",
        description=f"Kubernetes only: after a pod leaves its Service's endpoints, how long cairn waits before "
                    f"deleting it, so kube-proxy and load balancers stop sending it traffic first "
                    f"(default {DRAIN_DEFAULT_S:g} s: kube-proxy's 1 s minimum sync period plus a margin). "
                    f"0 turns draining off: pods are deleted at once, as Kubernetes itself does.",
    )

    allowed_host_paths: list[str] | None = Field(
        None, title="Allowed host paths",
        description="Directories of the node under which an environment's dirs[].host_path may lie; anything else is refused "
                    "at apply. Empty: on local, the agent's volumes directory and the data root ($CAIRN_DATA_ROOT, else "
                    "$CAIRN_HOME/data); on kubernetes, none (no hostPath at all).",
    )

    _name = field_validator("name")(_check_label)

    @field_validator("allowed_host_paths")
    @classmethod
    def _roots(cls, roots: list[str] | None) -> list[str] | None:
        if roots is None:
            return None
        for i, root in enumerate(roots):
            problem = host_root_problem(root)
            if problem:
                raise refuse(f"[{i}]", root, problem)
        return [normalized(r) for r in roots]

    def host_path_roots(self) -> list[str]:
        """The roots a host_path on this cluster must lie under (see ``allowed_host_paths``)."""
        if self.allowed_host_paths is not None:
            return list(self.allowed_host_paths)
        return local_host_roots() if self.runtime == "local" else []

    @model_validator(mode="after")
    def _runtime_fields(self) -> ClusterSpec:
        if self.runtime == "kubernetes":
            if not self.kubeconfig_secret:
                raise refuse("kubeconfig_secret", None, "a kubernetes cluster needs the name of a secret holding its kubeconfig")
            if self.namespace is not None and dns1123_problem(self.namespace):
                raise refuse("namespace", self.namespace, "must be a DNS-1123 label")
        elif self.kubeconfig_secret or self.namespace:
            raise refuse("runtime", self.runtime, "kubeconfig_secret and namespace apply only to runtime: kubernetes")
        elif self.service_type != "ClusterIP" or self.drain_s is not None:
            field = "service_type" if self.service_type != "ClusterIP" else "drain_s"
            raise refuse(field, getattr(self, field), "applies only to runtime: kubernetes; the local runtime's "
                         "traffic port is each port mapping's host_port")
        return self


class PortMapping(Spec):
    container_port: Port = Field(title="Container port", description="Port the app listens on inside the instance.")
    host_port: Port | None = Field(
        None, title="Traffic port", description="Port on which the load balancer accepts traffic for this container port."
    )
    name: str | None = Field(None, title="Name", description="Optional port name (DNS-1123 label, at most 15 characters).")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        problem = None if name is None else dns1123_problem(name) or (len(name) > 15 and "must be at most 15 characters")
        if problem:
            raise ValueError(problem)
        return name


class FileMount(Spec):
    path: str = Field(title="Path", description="Absolute path of the file inside the instance.")
    content: str = Field(title="Content", description="The file's text, at most 1 MiB (what a Kubernetes ConfigMap holds).")

    _path = field_validator("path")(_check_abs)

    @field_validator("content")
    @classmethod
    def _content(cls, content: str) -> str:
        size = len(content.encode("utf-8", "surrogatepass"))
        if size > FILE_CONTENT_MAX:
            raise ValueError(f"is {size} bytes; a file mount holds at most {FILE_CONTENT_MAX} (1 MiB, a ConfigMap's limit): "
                             "ship larger files in the image or the code package")
        return content


class DirMount(Spec):
    path: str = Field(title="Path", description="Absolute path inside the instance.")
    host_path: str = Field(title="Host path", description="Absolute directory on the node, under one of the cluster's "
                                                          "allowed_host_paths; created when missing on local, and must exist "
                                                          "on a Kubernetes node.")

    _path = field_validator("path")(_check_abs)

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, path: str) -> str:
        # The cluster's allowed roots are checked with the cluster known (configfile.check_references).
        return normalized(must_pass(path, host_root_problem(path)))


class LogSpec(Spec):
    stdout: bool = Field(True, title="Collect stdout/stderr")
    files: list[str] = Field(default_factory=list, title="Log files", description="Absolute paths or globs inside the instance.")
    max_size_mb: Annotated[int, Field(strict=True, ge=1, le=1024 * 1024)] = Field(10, title="Rotate at (MB)")
    keep: Annotated[int, Field(strict=True, ge=1, le=THRESHOLD_MAX)] = Field(3, title="Rotated files kept")

    @field_validator("files")
    @classmethod
    def _files(cls, files: list[str]) -> list[str]:
        return [_check_abs(f) for f in files]


def _check_argv(argv: list[str] | None) -> list[str] | None:
    # execve takes C strings: a NUL would cut an argument short, or fail the start.
    for i, arg in enumerate(argv or []):
        if "\x00" in arg:
            raise refuse(f"[{i}]", arg, "must not contain a NUL byte")
    return argv


class ExecAction(Spec):
    command: list[str] = Field(min_length=1, title="Command", description="argv, run inside the instance (no shell unless you call one).")

    _command = field_validator("command")(_check_argv)


class HttpGetAction(Spec):
    path: str = Field("/", title="Path")
    port: Port = Field(title="Port", description="A container port listed in ports.")
    expected_status: Annotated[int, Field(ge=100, le=599)] | None = Field(
        None, title="Expected status", description="Exact status to expect; when empty any 2xx or 3xx passes (Kubernetes' rule)."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError('must start with "/"')
        if any(ord(c) <= 0x20 or ord(c) >= 0x7f for c in path):
            # The path goes into the probe's request line: a space or newline would split it.
            raise ValueError("must be a URL path without spaces, control or non-ASCII characters (percent-encode them)")
        return path


class HealthCheck(Spec):
    """A readiness and liveness check with the kubelet's probe semantics."""

    http: HttpGetAction | None = Field(None, title="HTTP check")
    exec: ExecAction | None = Field(None, title="Command check")
    initial_delay_s: Seconds = Field(0, title="Initial delay (s)")
    period_s: Annotated[float, Field(gt=0, le=PROBE_S_MAX)] = Field(10, title="Period (s)")
    timeout_s: Annotated[float, Field(gt=0, le=PROBE_S_MAX)] = Field(1, title="Timeout (s)")
    success_threshold: Threshold = Field(1, title="Success threshold")
    failure_threshold: Threshold = Field(3, title="Failure threshold")

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        if (self.http is None) == (self.exec is None):
            raise refuse("http", None, "give exactly one of http or exec")
        return self

    @property
    def budget_s(self) -> float:
        """How long an instance may take to pass: delay plus enough periods to fail the threshold.

        >>> HealthCheck(http={"port": 80}, initial_delay_s=1, period_s=2, failure_threshold=3).budget_s
        10.0
        """
        return self.initial_delay_s + self.period_s * (self.failure_threshold + self.success_threshold) + self.timeout_s


class Hook(Spec):
    exec: ExecAction = Field(title="Command")


class Lifecycle(Spec):
    post_start: Hook | None = Field(None, title="PostStart",
                                    description="Runs after start; the instance is not running until it ends; failure kills it.")
    pre_stop: Hook | None = Field(None, title="PreStop", description="Runs before SIGTERM; counts against the grace period.")
    termination_grace_period_s: Annotated[float, Field(ge=0, le=GRACE_MAX_S)] = Field(
        30, title="Grace period (s)", description=f"From the start of PreStop to SIGKILL, at most {GRACE_MAX_S:g} s."
    )


UserId = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
# "UID" or "UID:GID"; ten digits at most, so a huge number is a range error and not a slow int().
RUN_AS = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?")


class RunAs(Spec):
    """Who the app runs as, instead of the image's user (a pod's runAsUser/runAsGroup).

    Written ``user: 1000``, ``user: "1000:1000"`` or ``user: {uid: 1000, gid: 1000}``. The gid
    defaults to the uid: both runtimes then run the same ids, whatever the image's /etc/passwd says
    (the node's default, gid 0 for a uid the image does not list, would put the app in root's group).
    """

    uid: UserId = Field(title="User id", description="Numeric user id inside the instance, e.g. 1000.")
    gid: UserId = Field(title="Group id", description="Numeric group id inside the instance, e.g. 1000; the uid when left out.")

    @model_validator(mode="before")
    @classmethod
    def _spelled(cls, data: object) -> object:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"uid": data, "gid": data}
        if isinstance(data, str):
            found = RUN_AS.fullmatch(data)
            if not found:
                raise refuse("", data, 'a user is "UID" or "UID:GID" in numbers (e.g. "1000:1000") or {uid: 1000, gid: 1000}')
            uid = int(found[1])
            return {"uid": uid, "gid": int(found[2]) if found[2] else uid}
        if isinstance(data, dict) and "uid" in data and data.get("gid") is None:
            return {**data, "gid": data["uid"]}
        return data

    @property
    def root(self) -> bool:
        return self.uid == 0


class EnvironmentSpec(Spec):
    """Everything one environment's instances are made of. A release order snapshots it."""

    cluster: str = Field(title="Cluster", description="Name of a cluster from the clusters list.")
    image: str = Field(
        title="Image",
        description="An OCI image reference: registry/name:tag or registry/name@sha256:..., e.g. 127.0.0.1:5000/cairn/python:3.11; "
                    "or a short name (cairn/python:3.11) for the default registry. For deploy type image the version is the tag. "
                    "An order pins the tag's digest.",
    )
    image_pull_secret: str | None = Field(
        None, title="Image pull secret",
        description='Name of a Prefect Secret block holding {"username": ..., "password": ...} for a private registry.',
    )
    command: list[str] | None = Field(None, title="Command", description="Overrides the image's entrypoint and arguments.")
    user: RunAs | None = Field(
        None, title="Run as",
        description='uid and gid the app runs as ("1000:1000", 1000 or {uid, gid}; the gid is the uid when left out); '
                    "the image's user when empty. A non-root user is also what a Kubernetes namespace enforcing "
                    'Pod Security "restricted" requires.',
    )
    read_only_root: Annotated[bool, Field(strict=True)] = Field(
        False, title="Read-only root filesystem",
        description="The app cannot write its image's files; /tmp stays writable (an emptyDir on Kubernetes, a tmpfs "
                    "locally), and so do the deploy root, directory mounts and log directories.",
    )
    instances: Annotated[int, Field(strict=True, le=INSTANCES_MAX)] = Field(title="Instances", description=f"At least 2, at most {INSTANCES_MAX}.")
    cpu: Annotated[float, Field(le=CPU_MAX)] = Field(title="CPU (cores)", description="Per instance, e.g. 0.5.")
    memory_mb: Annotated[int, Field(strict=True, le=MEMORY_MAX_MB)] = Field(
        title="Memory (MB)", description=f"Per instance, a whole number >= {MEMORY_FLOOR_MB}.")
    deploy_root: str | None = Field(None, title="Deploy root", description="Where the code package is unpacked, e.g. /acs/code.")
    ports: list[PortMapping] = Field(default_factory=list, title="Ports")
    env: dict[str, str] = Field(default_factory=dict, title="Environment variables")
    secret_env: dict[str, str] = Field(
        default_factory=dict, title="Secret environment variables", description="Variable name -> name of a Prefect Secret block."
    )
    files: list[FileMount] = Field(default_factory=list, title="File mounts")
    dirs: list[DirMount] = Field(default_factory=list, title="Directory mounts")
    logs: LogSpec = Field(default_factory=LogSpec, title="Log collection")
    health_check: HealthCheck | None = Field(None, title="Health check")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle, title="Lifecycle")

    @field_validator("instances")
    @classmethod
    def _instances(cls, n: int) -> int:
        if n < 2:
            raise ValueError("an environment runs at least 2 instances; set instances: 2 or more")
        return n

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, cpu: float) -> float:
        if not cpu > 0:
            raise ValueError("cpu must be a positive number of cores, e.g. 0.5")
        return cpu

    @field_validator("memory_mb")
    @classmethod
    def _memory(cls, mb: int) -> int:
        if mb < MEMORY_FLOOR_MB:
            raise ValueError(f"memory_mb must be a whole number of MB, at least {MEMORY_FLOOR_MB}")
        return mb

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        return check_image(image)

    _command = field_validator("command")(_check_argv)

    @field_validator("image_pull_secret")
    @classmethod
    def _pull_secret(cls, name: str | None) -> str | None:
        if name is not None and secret_name_problem(name):
            raise ValueError(f"must name a secret (a lowercase name such as registry-login), got {name!r}")
        return name

    @field_validator("deploy_root")
    @classmethod
    def _deploy_root(cls, path: str | None) -> str | None:
        return None if path is None else _check_abs(path)

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            problem = env_var_problem(name)
            if problem:
                raise refuse("", name, problem)
            if "\x00" in value:
                # The kernel passes the environment as C strings: the value would end at the NUL.
                raise refuse("", value, f"the value of {name} must not contain a NUL byte")
        return env

    @field_validator("secret_env")
    @classmethod
    def _secret_names(cls, env: dict[str, str]) -> dict[str, str]:
        for var, secret in env.items():
            if secret_name_problem(secret):
                raise ValueError(f"{var} must name a secret (a lowercase name such as shop-db-password), got {secret!r}")
        return env

    @model_validator(mode="after")
    def _cross_fields(self) -> EnvironmentSpec:
        ports = [p.container_port for p in self.ports]
        for i, port in enumerate(ports):
            if port in ports[:i]:
                raise refuse(f"ports[{i}].container_port", port, "this container port is listed twice; list each port once")
        host_ports = [p.host_port for p in self.ports]
        for i, host_port in enumerate(host_ports):
            if host_port is not None and host_port in host_ports[:i]:
                raise refuse(f"ports[{i}].host_port", host_port, "two ports map to this traffic port; give each its own")
        check = self.health_check
        if check is not None and check.http is not None and check.http.port not in ports:
            raise refuse(
                "health_check.http.port", check.http.port,
                f"not a mapped container port; add it to ports or use one of {ports or 'the mapped ports'}",
            )
        mounts = [(f"files[{i}].path", f.path) for i, f in enumerate(self.files)]
        mounts += [(f"dirs[{i}].path", d.path) for i, d in enumerate(self.dirs)]
        if self.deploy_root:
            mounts.insert(0, ("deploy_root", self.deploy_root))
        seen: dict[str, str] = {}
        for field, path in mounts:
            if path in seen:
                raise refuse(field, path, f"{seen[path]} already mounts this path; give each mount its own path")
            seen[path] = field
        for var in self.secret_env:
            if var in self.env:
                raise refuse(f"secret_env.{var}", var, "also set in env; keep the variable in one of env and secret_env")
        return self


GIT_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|\.lock$|/$|\.$")
BUILD_TIMEOUT_MAX_S = 6 * 3600
# A build runs in a container of this image unless source.image names another toolchain.
BUILD_IMAGE = "cairn/python:3.11"
# Upper bounds: past them a value is a typo (memory_mb: 1000000), not a build's real need.
BUILD_CPU_MAX = 64.0
BUILD_MEMORY_MAX_MB = 256 * 1024
_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://([^/?#]*)@", re.IGNORECASE)


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not a git ref name or commit id we pass to ``git fetch``, or None.

    Git's own rules (``git check-ref-format``) plus no leading "-", so a ref never reads as an option.

    >>> ref_problem("release/1.4") is None
    True
    >>> ref_problem("--upload-pack=x")
    'must not start with "-" or "/"'
    """
    if not ref or len(ref) > 200:
        return "must be 1-200 characters"
    if ref[0] in "-/":
        return 'must not start with "-" or "/"'
    if GIT_REF_BAD.search(ref) or any(part.startswith(".") for part in ref.split("/")):
        return "not a valid git ref (no spaces, '..', '~^:?*[\\', '@{', no part starting with '.')"
    return None


def public_repo(repo: str) -> str:
    """The repository URL without its userinfo, fit for messages, artifacts and package records.

    >>> public_repo("https://user:token@git.example/shop.git")
    'https://git.example/shop.git'
    """
    return _USERINFO.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)], repo)


class SourceSpec(Spec):
    """Where an app's code comes from and how a build turns it into a code package."""

    repo: str = Field(title="Repository", description="Git URL (https://, ssh://, file://) or an absolute local path.")
    ref: str = Field("main", title="Ref", description="Branch, tag or commit built when `cairn build` names none.")
    build_command: str = Field(title="Build command", description="Run with `sh -c` in the checkout, e.g. `make dist`.")
    output_dir: str = Field(title="Output directory", description="Relative to the checkout; packed as the code package.")
    timeout_s: Annotated[float, Field(gt=0, le=BUILD_TIMEOUT_MAX_S)] = Field(600, title="Timeout (s)")
    env: dict[str, str] = Field(default_factory=dict, title="Build environment variables")
    secret_env: dict[str, str] = Field(
        default_factory=dict, title="Build secret variables", description="Variable name -> name of a Prefect Secret block."
    )
    image: str = Field(
        BUILD_IMAGE, title="Build image",
        description="OCI image the build command runs in (registry/name:tag, or a short name for the default registry); "
                    "the checkout is its only mount.",
    )
    # none by default: a build that needs no downloads cannot reach the platform's API, the
    # agent's instances or anything else; host is for builds that fetch dependencies.
    network: Literal["none", "host"] = Field(
        "none", title="Network",
        description="`none`: loopback only; `host`: the worker's network (package downloads), loopback services included.",
    )
    cpu: Annotated[float, Field(gt=0, le=BUILD_CPU_MAX, allow_inf_nan=False)] = Field(1.0, title="CPU (cores)")
    memory_mb: Annotated[int, Field(strict=True, ge=MEMORY_FLOOR_MB, le=BUILD_MEMORY_MAX_MB)] = Field(
        1024, title="Memory (MB)", description="Over it the build is killed (its tmpfs /tmp counts too)."
    )
    credentials_secret: str | None = Field(
        None, title="Git credentials secret",
        description='Name of a Prefect Secret block holding JSON {"username": ..., "password": ...} (e.g. a token) '
                    "for an https:// repository; git gets it through its environment, never the URL or argv.",
    )

    @field_validator("repo")
    @classmethod
    def _repo(cls, repo: str) -> str:
        # Every refusal shows the URL without its userinfo: the value may hold a token.
        shown = public_repo(repo)
        userinfo = _USERINFO.match(repo)
        # A URL is stored in a block, shown in artifacts and put on git's argv: no credential in it.
        # ssh's user name (git@host) is no secret; a password or any http user is.
        if userinfo and (":" in userinfo.group(1) or not repo.lower().startswith("ssh://")):
            raise refuse("", shown, "must not carry credentials (user:password@ or token@): put them in a secret "
                         "and name it in source.credentials_secret")
        # A leading "-" would reach git as an option; control characters have no place in a URL.
        if not repo or repo.startswith("-") or any(ord(c) < 0x20 for c in repo):
            raise refuse("", shown, "must be a git URL or an absolute path, e.g. file:///srv/git/shop-api")
        if not (re.match(r"^(https?|ssh|git|file)://.+", repo) or repo.startswith("/") or re.match(r"^[\w.-]+@[\w.-]+:.+", repo)):
            raise refuse("", shown, "must be a git URL (https://, ssh://, git://, file://, user@host:path) or an absolute path")
        return repo

    @field_validator("ref")
    @classmethod
    def _ref(cls, ref: str) -> str:
        return must_pass(ref, ref_problem(ref))

    @field_validator("build_command")
    @classmethod
    def _command(cls, command: str) -> str:
        if not command.strip():
            raise ValueError("must not be empty, e.g. make dist")
        return command

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, path: str) -> str:
        if not path or path.startswith("/") or ".." in path.split("/") or "\x00" in path:
            raise ValueError("must be a relative path inside the checkout, without '..', e.g. dist")
        return path.strip("/") or "."

    _env = field_validator("env", "secret_env")(EnvironmentSpec._env_names.__func__)  # type: ignore[attr-defined]
    _secrets = field_validator("secret_env")(EnvironmentSpec._secret_names.__func__)  # type: ignore[attr-defined]
    _image = field_validator("image")(EnvironmentSpec._image.__func__)  # type: ignore[attr-defined]
    _credentials = field_validator("credentials_secret")(EnvironmentSpec._pull_secret.__func__)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _env_overlap(self) -> SourceSpec:
        for var in [*self.env, *self.secret_env]:
            if var == "HOME":
                raise refuse(f"env.{var}" if var in self.env else f"secret_env.{var}", var, "HOME is the build's workspace; pick another name")
        for var in self.secret_env:
            if var in self.env:
                raise refuse(f"secret_env.{var}", var, "also set in env; keep the variable in one of env and secret_env")
        if self.credentials_secret is not None and not re.match(r"^https?://", self.repo):
            raise refuse("credentials_secret", self.credentials_secret,
                         "applies to http(s):// repositories only; use an https:// URL or drop credentials_secret")
        return self


class AppSpec(Spec):
    name: str = Field(title="Name", description="A DNS-1123 label.")
    business_type: str = Field("self-built-backend", title="Business type")
    deploy_type: DeployType = Field("image", title="Deploy type", description="`image`, or `code-package` unpacked into the deploy root.")
    app_type: str | None = Field(None, title="App type")
    description: str = Field("", title="Description")
    environments: dict[EnvironmentName, EnvironmentSpec] = Field(title="Environments", description="production and test.")
    source: SourceSpec | None = Field(None, title="Code source", description="Git repository and build that `cairn build` packages.")

    _name = field_validator("name")(_check_label)

    @model_validator(mode="after")
    def _environments(self) -> AppSpec:
        if not self.environments:
            raise refuse("environments", {}, "an app needs production, test or both")
        if self.deploy_type == "code-package":
            for env_name, env in self.environments.items():
                if not env.deploy_root:
                    raise refuse(
                        f"environments.{env_name}.deploy_root", None,
                        "required for deploy_type code-package; official images use /acs/code",
                    )
        prod, test = self.environments.get("production"), self.environments.get("test")
        if prod and test and prod.cluster == test.cluster:
            raise refuse(
                "environments.test.cluster", test.cluster,
                "production already uses this cluster; production and test of one app must use different clusters",
            )
        return self


class CairnConfig(Spec):
    """One configuration file: the clusters and the apps that run on them."""

    clusters: list[ClusterSpec] = Field(default_factory=list)
    apps: list[AppSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> CairnConfig:
        for kind, names in (("clusters", [c.name for c in self.clusters]), ("apps", [a.name for a in self.apps])):
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise refuse(f"{kind}[{i}].name", name, "defined twice in this file; names must be unique")
        return self

    def cluster(self, name: str) -> ClusterSpec | None:
        return next((c for c in self.clusters if c.name == name), None)
