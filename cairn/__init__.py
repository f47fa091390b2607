"""cairn: batch releases of containerized apps, as Prefect flows.

The core (this package's own modules) holds the configuration models, revisions, the pure
release plan, statuses, the error tree and the Runtime protocol; it imports no Prefect. The
layers above it live in sibling folders mapped into this package (see pyproject.toml):
``cairn.runtimes``, ``cairn.blocks``, ``cairn.tasks``, ``cairn.flows``, ``cairn.deployments``.
"""

__version__ = "0.1.0"
