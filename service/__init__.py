"""The HTTP face of diffusion-jobs: job schemas, routes, auth, limits and the artifact store. Never imports torch."""
