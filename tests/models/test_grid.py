import pytest
import torch

from models.grid import make_grid


def test_default_grid_is_square_ish() -> None:
    images = torch.rand(5, 3, 8, 8)
    grid = make_grid(images)  # 3 columns, 2 rows
    assert grid.shape == (3, 2 * 10 + 2, 3 * 10 + 2)
    torch.testing.assert_close(grid[:, 2:10, 2:10], images[0])
    torch.testing.assert_close(grid[:, 12:20, 2:10], images[3])
    assert (grid[:, 12:20, 22:30] == 1.0).all()  # the empty sixth cell is padding


def test_grid_with_explicit_row_length_and_no_padding() -> None:
    images = torch.rand(4, 1, 5, 6)
    grid = make_grid(images, nrow=4, padding=0)
    assert grid.shape == (1, 5, 24)
    torch.testing.assert_close(grid[:, :, 18:], images[3])


def test_grid_rejects_non_batches() -> None:
    with pytest.raises(ValueError):
        make_grid(torch.rand(3, 8, 8))
