"""The digit judge reads real digits right and tells them from noise; its Frechet distance has known answers."""

import numpy as np
import pytest
import torch

from models.judge import digits, frechet_distance, judge_digits, split


def test_the_shipped_judge_reads_held_out_digits_and_finds_them_near_real_ones() -> None:
    _, held = split()
    images, labels = digits(held[::5])  # 100 held-out digits, 10 of each class
    real = judge_digits(images, labels)
    assert real.class_accuracy is not None and real.class_accuracy >= 0.95
    assert real.fd < 1.2 * real.fd_floor_same_n  # as close to the held-out digits as training digits are
    noise = judge_digits(torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0)), labels)
    assert noise.class_accuracy is not None and noise.class_accuracy < 0.5
    assert noise.fd > 10 * real.fd
    assert judge_digits(images, None).class_accuracy is None
    assert set(real.as_dict()) == {"n", "class_accuracy", "fd", "fd_floor_same_n", "fd_over_floor_same_n"}


def test_frechet_distance_of_gaussians_with_known_covariances() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 3.0])  # covariance diag(1, 4, 9)
    b = rng.normal(size=(20000, 3)) * np.array([2.0, 2.0, 1.0]) + 1.0  # diag(4, 4, 1), mean 1
    # |mu|^2 + sum (sqrt(s_a) - sqrt(s_b))^2 for commuting covariances: 3 + (1 + 0 + 4)
    assert frechet_distance(a, b) == pytest.approx(8.0, rel=0.03)
    singular = np.c_[a[:, :2], np.zeros(len(a))]  # a dead feature: a singular covariance is fine
    assert np.isfinite(frechet_distance(singular, b))
