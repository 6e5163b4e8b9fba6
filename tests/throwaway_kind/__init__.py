"""A job kind that is not part of the service, added the way a deployment adds one (`EXTRA_KINDS`): it proves that a
kind is one module per side (tests/e2e/test_extra_kind.py; docs/architecture.md, "Adding a job kind")."""
