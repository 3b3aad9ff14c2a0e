"""AegisOps: config -> prometheus -> detector -> policy -> kube / notify, driven by one loop."""

__version__ = "0.1.0"
