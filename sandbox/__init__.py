"""The local stand-in for a cluster: Kubernetes API emulator, Prometheus launcher, Slack receiver, process-backed Deployments."""
