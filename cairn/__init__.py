"""cairn: batch releases of containerized apps, as Prefect flows.

The core (this package's own modules) holds the configuration models, revisions, the pure
release plan, statuses, the error tree and the Runtime protocol; it imports no Prefect. The
layers above it live in sibling folders mapped into this package (see pyproject.toml), each
importing only those below it: ``cairn.runtimes`` and ``cairn.blocks``, then ``cairn.tasks`` and
``cairn.orders``, ``cairn.flows``, ``cairn.controlplane``, ``cairn.webhook`` and ``cairn.cli``.
"""

__version__ = "0.1.0"
