"""The control plane on one machine: the Prefect server, the worker, warm starts, auth, the deployments."""
