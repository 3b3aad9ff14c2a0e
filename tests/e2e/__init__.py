"""End-to-end tests: a package, so the sandbox World (scope="package") is torn down after
the last test here instead of living on through the rest of the session."""
