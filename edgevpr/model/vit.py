"""DINOv2 vision transformers as backbones (patch 14), written here with the official
parameter names (``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.proj``,
``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``,
``norm``) so that DINOv2's published weights, and the BoQ and SALAD checkpoints built on
them, load with ``strict=True``.

The backbone gives the patch tokens as a C x H/14 x W/14 map and the class token beside it
(``(features, token)``): SALAD reads the token, BoQ only the map. Registered twice: with the
final LayerNorm (DINOv2's own output, as SALAD uses it) and without (the last block's output,
as BoQ uses it).

The position embedding is learnt for a 37 x 37 grid (518 px). Another input size gets it
resized as DINOv2's own ``interpolate_pos_encoding`` does: bicubic, no antialiasing, by the
scale factor (grid + 0.1) / 37 rather than to the grid's size (its ``interpolate_offset``,
kept by every published model), so each cell reads the source position DINOv2 reads (at
322 px the centre cell reads 18.0, where resizing to the size would read 17.92). In eval
mode the resized table is computed once per size and weights version and kept, so an
exported graph holds it as a constant instead of a resize.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model.registry import register_backbone

PATCH = 14
PRETRAINED_GRID = 37  # DINOv2's 518 x 518 training size
INTERPOLATE_OFFSET = 0.1  # DINOv2's interpolate_offset
ARCHS = {  # name: (embed dim, depth, heads)
    "dinov2_vits14": (384, 12, 6),
    "dinov2_vitb14": (768, 12, 12),
}


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (DINOv2's)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Backbone(nn.Module):
    """Images -> (C x H/14 x W/14 patch-token map, C class token)."""

    stride = PATCH

    def __init__(self, arch: str, final_norm: bool, pretrained: bool = False) -> None:
        super().__init__()
        if pretrained:
            raise EdgeVPRError(
                f"{arch} weights are not bundled and cannot be downloaded here: build with "
                "pretrained=False and load DINOv2, BoQ or SALAD weights with load_checkpoint"
            )
        dim, depth, heads = ARCHS[arch]
        self.out_channels = dim
        self.final_norm = final_norm
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAINED_GRID**2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # kept for strict loading
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # held for strict loading only: DINOv2's masked-token pre-training, and the final
        # norm where this backbone gives the last block's output
        self.mask_token.requires_grad_(False)
        self.norm.requires_grad_(final_norm)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self._fixed: dict[tuple[int, int], torch.Tensor] = {}
        self.register_load_state_dict_pre_hook(lambda *_: self._fixed.clear())

    def stages(self) -> list[list[nn.Module | nn.Parameter]]:
        """Freezable stages: the embeddings, then each block (the final norm goes last)."""
        embeddings = [self.patch_embed, self.cls_token, self.pos_embed, self.mask_token]
        return [embeddings, *[[b] for b in self.blocks], [self.norm]]

    def train(self, mode: bool = True) -> DinoV2Backbone:
        self._fixed.clear()  # weights may change in training: resize again afterwards
        return super().train(mode)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The table for ``grid``: resized each call in training, once in eval mode."""
        if self.training:
            return self._resized(grid)
        if grid not in self._fixed:
            with torch.no_grad():
                self._fixed[grid] = self._resized(grid).detach().clone()
        return self._fixed[grid]

    def _resized(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == (PRETRAINED_GRID, PRETRAINED_GRID):
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patches.shape[-1]
        table = patches.reshape(1, PRETRAINED_GRID, PRETRAINED_GRID, dim).permute(0, 3, 1, 2)
        scale = tuple((cells + INTERPOLATE_OFFSET) / PRETRAINED_GRID for cells in grid)
        table = F.interpolate(table, scale_factor=scale, mode="bicubic", align_corners=False)
        if tuple(table.shape[-2:]) != grid:  # the offset keeps floor(37 * scale) == grid
            raise EdgeVPRError(f"the position table came out {tuple(table.shape[-2:])}, not {grid}")
        return torch.cat([cls, table.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        grid = (h // PATCH, w // PATCH)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1)
        tokens = tokens + self.position_embedding(grid)
        for block in self.blocks:
            tokens = block(tokens)
        if self.final_norm:
            tokens = self.norm(tokens)
        features = tokens[:, 1:].transpose(1, 2).reshape(b, -1, grid[0], grid[1])
        return features, tokens[:, 0]


for _arch, (_dim, _, _) in ARCHS.items():
    register_backbone(_arch, out_channels=_dim, stride=PATCH, returns_token=True)(
        functools.partial(DinoV2Backbone, _arch, True)
    )
    register_backbone(f"{_arch}_raw", out_channels=_dim, stride=PATCH, returns_token=True)(
        functools.partial(DinoV2Backbone, _arch, False)
    )
