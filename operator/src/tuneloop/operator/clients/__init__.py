"""Wrappers around outside systems (Kubernetes, the Ray job API, MLflow) behind small interfaces.

Each client turns its vendor's exceptions into ours (`clients.errors`) with the original kept as
`__cause__`, applies a timeout to every call, and retries only what is safe to retry.
"""
