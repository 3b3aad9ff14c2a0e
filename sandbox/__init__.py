"""The local stand-in for a cluster.

Kubernetes API emulator, Prometheus launcher, Slack receiver and process-backed
Deployments, used by `make demo` and the tests.
"""
