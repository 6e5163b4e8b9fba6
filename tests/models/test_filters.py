import numpy as np
import pytest
import torch

from models.filters import default_blur_sigma, gaussian_blur, gaussian_kernel1d, highpass, lowpass


def test_kernel_is_normalised_and_symmetric() -> None:
    k = gaussian_kernel1d(5, 1.0)
    assert k.shape == (5,)
    assert k.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(k, k.flip(0))


def test_default_sigma_matches_torchvision() -> None:
    assert default_blur_sigma(3) == pytest.approx(0.8)
    assert default_blur_sigma(9) == pytest.approx(1.7)


def test_blur_keeps_a_constant_image_constant() -> None:
    x = torch.full((1, 3, 16, 16), 0.37, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(x, 7, 2.0), x, rtol=1e-12, atol=0)


def test_blur_matches_hand_computed_3x3() -> None:
    x = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3)
    sigma = 1.0
    w = np.exp(-0.5 * np.array([-1.0, 0.0, 1.0]) ** 2 / sigma**2)
    w /= w.sum()
    kernel2d = np.outer(w, w)
    padded = np.pad(x[0, 0].numpy(), 1, mode="reflect")  # same as torch's 'reflect'
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))  # (3, 3, 3, 3)
    expected = (windows * kernel2d).sum(axis=(-2, -1))
    torch.testing.assert_close(gaussian_blur(x, 3, sigma)[0, 0], torch.from_numpy(expected))


def test_large_kernel_on_small_image() -> None:
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, 33, default_blur_sigma(33))
    assert y.shape == x.shape
    assert y.std() < x.std()


@pytest.mark.parametrize(("kernel_size", "sigma"), [(4, 1.0), (0, 1.0), (-3, 1.0), (3, 0.0), (3, -1.0)])
def test_blur_rejects_bad_arguments(kernel_size: int, sigma: float) -> None:
    with pytest.raises(ValueError):
        gaussian_blur(torch.zeros(1, 1, 8, 8), kernel_size, sigma)


def test_lowpass_plus_highpass_is_identity() -> None:
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lowpass(x, 9, 2.0) + highpass(x, 9, 2.0), x)
