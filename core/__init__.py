"""The shared core of diffusion-jobs, beneath the API (service/) and the workers (worker/): settings, Redis keys and
connections, the artifact store, job state and its endings, the job schemas and kinds, the model catalog. Never
imports torch, service or worker (docs/architecture.md, "Layers")."""
