"""The seeded, chunked Rademacher projector used by LESS."""

import pytest
import torch

from baselines.projection import BLOCK_ROWS, RademacherProjector, make_projector


def _x(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_same_seed_same_projection_other_seed_differs():
    x = _x(4, 700)
    a = RademacherProjector(700, 256, seed=3).project(x)
    b = RademacherProjector(700, 256, seed=3).project(x)
    c = RademacherProjector(700, 256, seed=4).project(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("chunk_rows", [1, 128, 200, 384])
def test_chunked_equals_unchunked(chunk_rows):
    x = _x(5, 1000)
    whole = RademacherProjector(1000, 300, seed=1, chunk_rows=10_000)
    chunked = RademacherProjector(1000, 300, seed=1, chunk_rows=chunk_rows)
    assert whole.chunk_rows >= 1000 and chunked.chunk_rows < 1000
    assert torch.allclose(chunked.project(x), whole.project(x), atol=1e-5, rtol=1e-5)
    dense = whole.rows(0, 1000)
    assert torch.allclose(chunked.project(x), x @ dense / 300**0.5, atol=1e-5, rtol=1e-5)


def test_matrix_is_defined_blockwise_and_rademacher():
    p = RademacherProjector(600, 64, seed=7)
    full = p.rows(0, 512)
    parts = torch.cat([p.rows(i, i + BLOCK_ROWS) for i in range(0, 512, BLOCK_ROWS)])
    assert torch.equal(full, parts)
    assert set(full.unique().tolist()) == {-1.0, 1.0}
    assert abs(full.mean().item()) < 0.02
    with pytest.raises(ValueError, match="multiple"):
        p.rows(5, 100)


def test_inner_products_approximately_preserved():
    d_in, d_out = 3000, 4096
    x = _x(16, d_in, seed=1)
    y = _x(16, d_in, seed=2) + 0.5 * x  # correlated pairs, cosines around 0.45
    p = RademacherProjector(d_in, d_out, seed=0, chunk_rows=512)
    px, py = p.project(x), p.project(y)
    scale = x.norm(dim=1) * y.norm(dim=1)
    err = ((px * py).sum(1) - (x * y).sum(1)).abs() / scale
    assert err.max() < 0.08  # JL: error ~ 1/sqrt(d) = 0.016 per pair
    assert ((px.norm(dim=1) / x.norm(dim=1)) - 1).abs().max() < 0.08


def test_memory_is_one_chunk():
    p = RademacherProjector(100_000, 8192, seed=0, chunk_rows=256)
    assert p.chunk_bytes == 256 * 8192 * 4


def test_shape_checked_and_cpu_uses_torch_projector():
    p = make_projector(300, 32, seed=0, chunk_rows=128, device=torch.device("cpu"))
    assert isinstance(p, RademacherProjector)
    with pytest.raises(ValueError, match="shape"):
        p.project(torch.zeros(2, 299))
