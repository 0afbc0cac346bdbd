"""Where a coarse map can peak after it is resized to the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from braincam.explain import explain, normalise
from braincam.explain.grid import map_grid, peak_pixels


def axis_pixels(g: int, size: int) -> list[int]:
    """By hand, per axis: the outer half cells (clamped edges) and the two pixels around each
    inner node, which lies at (i + 1/2) * size / g - 1/2."""
    cell = size // g
    half = cell // 2
    inner = [p for i in range(1, g - 1) for p in (i * cell + half - 1, i * cell + half)]
    return list(range(half)) + inner + list(range(size - half, size))


@pytest.mark.parametrize(("g", "size"), [(7, 224), (4, 32), (2, 16)])
def test_peak_pixels_are_the_node_pixels_and_edge_plateaus(g, size):
    reach = peak_pixels((g, g), (size, size))
    pixels = axis_pixels(g, size)
    expected = np.zeros((size, size), bool)
    expected[np.ix_(pixels, pixels)] = True
    assert np.array_equal(reach, expected)
    if (g, size) == (7, 224):
        assert reach.sum() == 42 * 42


@pytest.mark.parametrize(("grid", "size"), [((5, 7), (40, 56)), ((9, 9), (260, 260)),
                                            ((10, 10), (300, 300)), ((7, 6), (45, 100)),
                                            ((12, 12), (8, 8))])
def test_every_maximum_of_a_resized_random_map_is_a_peak_pixel(grid, size):
    """Whole and fractional ratios of input to grid (9 x 9 at 260 px: 28.9 px a cell), and a
    map shrunk below its grid: no maximum falls outside the peak pixels."""
    reach = peak_pixels(grid, size)
    maps = normalise(torch.rand(400, *grid, generator=torch.Generator().manual_seed(0)),
                     size).numpy()
    peaks = maps >= maps.max(axis=(1, 2), keepdims=True)
    assert peaks.any(axis=0).sum() > 20  # the maxima land in many places...
    assert not (peaks & ~reach).any()  # ...all of them peak pixels
    assert reach.mean() < 0.2 or size[0] < grid[0]  # a bound that still bounds


def test_a_map_at_input_size_can_peak_anywhere():
    assert peak_pixels((16, 16), (16, 16)).all()


class TinyCnn(nn.Module):
    """Two stride-2 convolutions: a 4 x 4 feature map at 16 px."""

    arch = None
    default_layer = "features.2"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_map_grid_is_the_layer_resolution_for_cams_and_the_input_for_ig():
    torch.manual_seed(0)
    model = TinyCnn().eval()
    images = np.random.default_rng(0).integers(0, 255, (2, 16, 16), dtype=np.uint8)
    assert map_grid(model, images, "gradcam") == (4, 4)
    model.default_layer = "features.0"
    for method in ("gradcam", "layercam", "eigencam"):
        assert map_grid(model, images, method) == (8, 8)
        assert explain(model, images[:1], method=method).raw.shape[-2:] == (8, 8)
    assert map_grid(model, images, "gradcam", layer="features.2") == (4, 4)
    assert map_grid(model, images, "ig") == (16, 16)
    assert map_grid(model, images, "occlusion") is None  # flat over windows: no grid
