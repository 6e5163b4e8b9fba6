"""Request and response schemas: the single source of truth for every job's parameters (the worker re-uses them)."""
