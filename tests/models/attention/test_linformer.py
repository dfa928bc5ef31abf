"""Linformer attention against explicit token-axis projections of keys and values."""
from __future__ import annotations

import math

import pytest
import torch

import vvt_mm  # noqa: F401
from vvt_mm.models.attention import LinformerAttention


def pooling_matrix(size: int, out: int) -> torch.Tensor:
    """Adaptive average pooling of ``size`` cells into ``out`` bins, as a matrix.

    Bin ``i`` averages cells ``floor(i * size / out)`` .. ``ceil((i + 1) * size / out) - 1``.
    """
    mat = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def explicit_linformer(mixer: LinformerAttention, x, hw):
    c, g = mixer.embed_dims, mixer.pool_size
    # Row-major tokens: pooling the grid is the Kronecker product of the 1D poolings.
    pool = torch.kron(pooling_matrix(hw[0], g), pooling_matrix(hw[1], g))  # (G^2, N)
    e = mixer.proj_k.weight @ pool
    f = (mixer.proj_k if mixer.share_kv else mixer.proj_v).weight @ pool  # (k, N)
    q, k, v = (x @ mixer.qkv.weight.T + mixer.qkv.bias).split(c, dim=-1)
    k, v = e @ k, f @ v
    d = c // mixer.num_heads
    out = torch.empty_like(x)
    for head in range(mixer.num_heads):
        s = slice(head * d, (head + 1) * d)
        attn = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
        out[..., s] = attn @ v[..., s]
    return out @ mixer.proj.weight.T + mixer.proj.bias


@pytest.mark.parametrize('hw,pool_size,share_kv', [((9, 13), 4, False), ((5, 7), 6, False),
                                                   ((3, 11), 4, True)])
def test_output_equals_explicit_projected_attention_in_float64(hw, pool_size, share_kv):
    """Grids larger and smaller than the pooled grid (down- and up-sampling)."""
    torch.manual_seed(0)
    mixer = LinformerAttention(8, 2, proj_len=5, pool_size=pool_size,
                               share_kv=share_kv).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x, hw), explicit_linformer(mixer, x, hw))


def test_on_the_reference_grid_the_projection_is_linformers_e():
    torch.manual_seed(0)
    mixer = LinformerAttention(8, 1, proj_len=5, pool_size=4).double()
    k = torch.randn(2, 16, 8, dtype=torch.float64)
    projected = mixer.project_tokens(k, (4, 4), mixer.proj_k)
    torch.testing.assert_close(projected, mixer.proj_k.weight @ k)


def test_defaults_follow_the_linformer_paper():
    mixer = LinformerAttention(64, 1)
    assert mixer.proj_k.weight.shape == (256, 16 * 16) and mixer.proj_k.bias is None
    assert mixer.proj_v is not None and mixer.proj_v.weight.shape == (256, 256)
    assert LinformerAttention(64, 1, share_kv=True).proj_v is None


def test_token_count_must_fill_the_grid():
    mixer = LinformerAttention(8, 1, proj_len=4, pool_size=2)
    with pytest.raises(ValueError, match='grid'):
        mixer(torch.randn(1, 10, 8), (3, 4))
