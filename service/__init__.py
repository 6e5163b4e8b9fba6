"""The HTTP face of diffusion-jobs: routes, auth, admission at the door, limits, events and webhook delivery, over
the shared core (core/). Never imports torch or worker/ (docs/architecture.md, "Layers")."""
