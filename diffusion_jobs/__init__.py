"""The `diffusion-jobs` command: run the service's parts (`up`, `api`, `worker`, `redis`)."""
