"""An official-structure VVT: the layout and ops of ``classification/vvt.py``, our own code.

The benchmark compares our VVT with what users of the official repository
run, so it needs a model built the way the official one is, with the same
weights. This module re-implements that structure from the published facts
(``REFERENCE.md``; no official code is copied):

* modules named as in the official state dict (``patch_embed{i}``,
  ``block{i}.{j}.attn.{q,k,v,out}_proj``, ``attn.se_fc``, ``mlp.dwconv.dwconv``,
  ``norm{i}``), so an official checkpoint loads with ``strict=True`` and
  :func:`vvt_mm.checkpoint.convert_vvt` turns its state dict into ours;
* the FFN's depthwise conv on tokens transposed to ``(B, C, H, W)`` and
  flattened back, with ``H, W`` passed around explicitly;
* the attention in the ``N x 4d`` form: ``Q' = [q cos a, q sin a, q cos b,
  q sin b]`` (and ``K'``) concatenated along channels, ``K'^T V`` and the
  normaliser from ``Q' . sum K'``, the angles rebuilt on every call;
* the official ``abs_clamp`` as the plain expression ``sign(t) * clamp(|t|)``
  (autograd saves its inputs) at the six official points.

It is the benchmark's baseline (and a test fixture), not a supported model: no ``init_cfg``,
no registry entry.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from torch import Tensor

__all__ = ['OfficialStructureVVT', 'official_structure_pair', 'OFFICIAL_ARCHS']

# Official variants: dims [96, 160, 320, 512], heads [1, 2, 5, 8], FR 2.
OFFICIAL_ARCHS = {
    'tiny': dict(depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4]),
    'small': dict(depths=[3, 3, 9, 3], mlp_ratios=[8, 8, 4, 4]),
    'medium': dict(depths=[3, 3, 27, 3], mlp_ratios=[8, 8, 4, 4]),
    'large': dict(depths=[4, 4, 36, 4], mlp_ratios=[4, 4, 4, 4]),
}
_CLAMP_LO, _CLAMP_HI, _EPS = 1e-4, 1e4, 1e-4


def _abs_clamp(t: Tensor) -> Tensor:
    return torch.sign(t) * torch.clamp(torch.abs(t), _CLAMP_LO, _CLAMP_HI)


class _DWConv(nn.Module):

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803 (official names)
        B, N, C = x.shape  # noqa: N806
        x = x.transpose(1, 2).reshape(B, C, H, W)
        return self.dwconv(x).flatten(2).transpose(1, 2)


class _Mlp(nn.Module):

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class _VicinityAttention(nn.Module):
    """Feature-reduced vicinity attention in the official ``N x 4d`` form, with FPC."""

    def __init__(self, dim: int, num_heads: int, reduction: int = 2) -> None:
        super().__init__()
        inner = dim // reduction
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)
        self.se_fc = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(inplace=True),
                                   nn.Linear(dim, dim, bias=False), nn.Sigmoid())

    @staticmethod
    def _with_positions(x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
        """``(..., N, d)`` -> ``(..., N, 4d)``: the cos/sin re-weighted copies."""
        index = torch.arange(H * W, device=x.device, dtype=torch.float32)
        row = torch.div(index, W, rounding_mode='floor')
        col = index - row * W
        a = (math.pi / 2 * row / H).unsqueeze(-1)
        b = (math.pi / 2 * col / W).unsqueeze(-1)
        return torch.cat([x * torch.cos(a), x * torch.sin(a), x * torch.cos(b),
                          x * torch.sin(b)], dim=-1)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
        B, N, C = x.shape  # noqa: N806
        gate = self.se_fc(x.mean(dim=1)).unsqueeze(1)

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)

        q = self._with_positions(torch.relu(heads(self.q_proj(x))), H, W)
        k = self._with_positions(torch.relu(heads(self.k_proj(x))), H, W)
        v = heads(self.v_proj(x))
        kv = _abs_clamp(torch.einsum('bhnc,bhnd->bhcd', k, v))
        z = _abs_clamp(1.0 / (torch.einsum('bhnc,bhc->bhn', q, k.sum(dim=2)) + _EPS))
        out = _abs_clamp(torch.einsum('bhnc,bhcd->bhnd', q, kv))
        out = _abs_clamp(out * z.unsqueeze(-1))
        out = out.permute(0, 2, 1, 3).reshape(B, N, -1)
        out = _abs_clamp(self.out_proj(out))
        return _abs_clamp(out + out * gate)


class _Block(nn.Module):

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _VicinityAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class _OverlapPatchEmbed(nn.Module):

    def __init__(self, patch_size: int, stride: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        _, _, H, W = x.shape  # noqa: N806
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class OfficialStructureVVT(nn.Module):
    """VVT with the official module layout and ops; returns the four NCHW stage maps.

    Args:
        arch: ``'tiny'|'small'|'medium'|'large'`` or a dict with ``embed_dims``,
            ``num_heads``, ``depths``, ``mlp_ratios``.
        num_classes: a ``head`` Linear on the pooled last stage when > 0
            (:meth:`classify`); the stage maps come from :meth:`forward`.
        drop_path_rate: stochastic depth, linear over blocks.
    """

    def __init__(self, arch: str | Mapping = 'small', num_classes: int = 0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if isinstance(arch, str):
            arch = dict(embed_dims=[96, 160, 320, 512], num_heads=[1, 2, 5, 8],
                        **OFFICIAL_ARCHS[arch])
        dims, depths = list(arch['embed_dims']), list(arch['depths'])
        self.num_stages = len(depths)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for i, depth in enumerate(depths):
            setattr(self, f'patch_embed{i + 1}', _OverlapPatchEmbed(
                7 if i == 0 else 3, 4 if i == 0 else 2, 3 if i == 0 else dims[i - 1],
                dims[i]))
            setattr(self, f'block{i + 1}', nn.ModuleList([
                _Block(dims[i], arch['num_heads'][i], arch['mlp_ratios'][i], rates[start + j])
                for j in range(depth)]))
            setattr(self, f'norm{i + 1}', nn.LayerNorm(dims[i], eps=1e-6))
            start += depth
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else None
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        B = x.shape[0]  # noqa: N806
        outs = []
        for i in range(1, self.num_stages + 1):
            x, H, W = getattr(self, f'patch_embed{i}')(x)  # noqa: N806
            for blk in getattr(self, f'block{i}'):
                x = blk(x, H, W)
            x = getattr(self, f'norm{i}')(x)
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return tuple(outs)

    def classify(self, x: Tensor) -> Tensor:
        """Logits from the mean of the last stage's tokens (after ``norm4``)."""
        if self.head is None:
            raise ValueError('built with num_classes=0: no head')
        return self.head(self.forward(x)[-1].flatten(2).mean(dim=2))


def official_structure_pair(arch: str | Mapping = 'small', seed: int = 0,
                            drop_path_rate: float = 0.0,
                            **vvt_kwargs) -> tuple[nn.Module, OfficialStructureVVT]:
    """Our :class:`~vvt_mm.models.backbones.VVT` and the official-structure one, same weights.

    The official-structure model is initialised, and its state dict goes into
    ours through :func:`vvt_mm.checkpoint.convert_vvt` (``strict=True``): the
    path an official checkpoint takes.
    """
    from vvt_mm.checkpoint import convert_vvt
    from vvt_mm.models.backbones import VVT
    torch.manual_seed(seed)
    official = OfficialStructureVVT(arch, drop_path_rate=drop_path_rate)
    ours = VVT(arch=dict(arch) if isinstance(arch, Mapping) else arch,
               drop_path_rate=drop_path_rate, **vvt_kwargs)
    ours.load_state_dict(convert_vvt(official.state_dict()), strict=True)
    return ours, official
