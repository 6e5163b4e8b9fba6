"""Pure PyTorch numerics for diffusion-jobs: noise schedules, forward processes, filters and image codecs."""
