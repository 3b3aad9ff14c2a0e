"""The instrumented sample workload (aegisops-app) and its load generator."""
