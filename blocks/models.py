"""The block types. Names of block documents are the DNS-1123 names users gave, so they are safe."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from cairn.config import AppSpec, ClusterSpec, DeployType, EnvironmentName, EnvironmentSpec, RuntimeKind, ServiceType, SourceSpec
from cairn.revision import Revision


class ClusterBlock(Block):
    """A place where environments run: this machine's node agent, or a Kubernetes API server."""

    _block_type_name: ClassVar[str] = "Cairn Cluster"
    _block_type_slug: ClassVar[str] = "cairn-cluster"
    _description: ClassVar[str] = "A cluster cairn ships to: `local` (the node agent) or `kubernetes`. The kubeconfig is kept secret."

    name: str = Field(title="Name", description="DNS-1123 label.")
    runtime: RuntimeKind = Field("local", title="Runtime")
    kubeconfig_secret: str | None = Field(None, title="Kubeconfig secret", description="Secret block the kubeconfig came from.")
    kubeconfig: SecretStr | None = Field(None, title="Kubeconfig", description="Copied from the secret at apply; never shown in clear.")
    context: str | None = Field(None, title="Context")
    namespace: str | None = Field(None, title="Namespace")
    service_type: ServiceType = Field("ClusterIP", title="Service type")
    drain_s: float | None = Field(None, title="Drain (s)")
    allowed_host_paths: list[str] | None = Field(None, title="Allowed host paths",
                                                 description=ClusterSpec.model_fields["allowed_host_paths"].description)

    @classmethod
    def from_spec(cls, spec: ClusterSpec, kubeconfig: str | None = None) -> ClusterBlock:
        return cls(**spec.model_dump(), kubeconfig=SecretStr(kubeconfig) if kubeconfig else None)

    def spec(self) -> ClusterSpec:
        return ClusterSpec(
            name=self.name, runtime=self.runtime, kubeconfig_secret=self.kubeconfig_secret,
            context=self.context, namespace=self.namespace, service_type=self.service_type, drain_s=self.drain_s,
            allowed_host_paths=self.allowed_host_paths,
        )


class AppBlock(Block):
    """An application: its identity; its environments are blocks of their own."""

    _block_type_name: ClassVar[str] = "Cairn App"
    _block_type_slug: ClassVar[str] = "cairn-app"
    _description: ClassVar[str] = "An application registered with cairn. Its production and test environments are Cairn Environment blocks."

    name: str = Field(title="Name", description="DNS-1123 label.")
    business_type: str = Field("self-built-backend", title="Business type")
    deploy_type: DeployType = Field("image", title="Deploy type", description="`image` or `code-package`.")
    app_type: str | None = Field(None, title="App type")
    description: str = Field("", title="Description")
    source: SourceSpec | None = Field(None, title="Code source", description="Git repository and build that `cairn build` packages.")


class EnvironmentBlock(Block):
    """One environment's configuration. Saving it changes nothing that runs: a release order ships it."""

    _block_type_name: ClassVar[str] = "Cairn Environment"
    _block_type_slug: ClassVar[str] = "cairn-environment"
    _description: ClassVar[str] = (
        "The configuration of one environment (production or test) of an app. Changes take effect only through a release order."
    )

    app: str = Field(title="App")
    environment: EnvironmentName = Field(title="Environment")
    spec: EnvironmentSpec = Field(title="Configuration")

    @staticmethod
    def document_name(app: str, environment: str) -> str:
        return f"{app}-{environment}"


class RevisionBlock(Block):
    """An immutable snapshot shipped by a release order; named by its digest."""

    _block_type_name: ClassVar[str] = "Cairn Revision"
    _block_type_slug: ClassVar[str] = "cairn-revision"
    _description: ClassVar[str] = "What one release order ships: an environment's configuration and a version, with a content digest."

    revision: Revision = Field(title="Revision")

    @staticmethod
    def document_name(digest: str) -> str:
        return f"rev-{digest[:32]}"


def app_spec(app: AppBlock, environments: dict[str, EnvironmentBlock]) -> AppSpec:
    return AppSpec(
        name=app.name, business_type=app.business_type, deploy_type=app.deploy_type, app_type=app.app_type,
        description=app.description, environments={name: block.spec for name, block in environments.items()},
        source=app.source,
    )
