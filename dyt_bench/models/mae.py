"""Masked autoencoder (He et al., 2022) on a timm VisionTransformer: random patch masking, a narrower ViT decoder of timm
``Block``s, and the per-patch normalized-pixel loss on the masked patches.

The encoder is a plain timm ``VisionTransformer`` (no head), so its state dict loads unchanged into the ViT that is
fine-tuned or probed later. Written by hand, since neither timm nor torchvision ships it: the per-sample random
masking (argsort of uniform noise, as in the reference MAE code), the decoder wiring and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MAEDecoderConfig:
    """The decoder: ``depth`` timm Blocks of width ``embed_dim`` (MAE: 8 blocks of 512, 16 heads)."""

    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0


def build_vit_encoder(model: str, img_size: int, in_chans: int, model_kwargs: dict | None = None,
                      num_classes: int = 0) -> nn.Module:
    """A randomly initialised timm VisionTransformer (``num_classes=0``: features only)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(model):
        raise ValueError(f"model.encoder={model!r} is not a timm model; e.g. vit_base_patch16_224, vit_small_patch16_224")
    net = timm.create_model(model, pretrained=False, num_classes=num_classes, img_size=img_size, in_chans=in_chans,
                            **(model_kwargs or {}))
    if not isinstance(net, VisionTransformer):
        raise ValueError(f"model.encoder={model!r} is a {type(net).__name__}; a timm VisionTransformer is required")
    return net


def random_masking(num_patches: int, batch: int, mask_ratio: float, device, generator=None):
    """Per-sample random subsets of patches to keep.

    Returns ``keep`` (B, n_keep) indices of the visible patches, ``restore`` (B, N) the permutation that puts the
    [visible, mask-token] sequence back in patch order, and ``mask`` (B, N): 1 where a patch is hidden.
    """
    n_keep = max(1, int(round(num_patches * (1 - mask_ratio))))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :n_keep]
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, restore)
    return keep, restore, mask


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, p·p·C), patches in row-major order (the order of timm's PatchEmbed)."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, chans: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = x.shape[0]
    gh, gw = grid
    x = x.reshape(b, gh, gw, patch, patch, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, chans, gh * patch, gw * patch)


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
                      eps: float = 1e-6) -> torch.Tensor:
    """Mean squared error over the hidden patches; ``norm_pix``: each target patch standardised by its own mean and
    variance (MAE's normalized-pixel loss)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


class MaskedAutoencoderViT(nn.Module):
    """timm ViT encoder on the visible patches + a narrower ViT decoder that predicts the pixels of every patch."""

    def __init__(self, encoder: nn.Module, decoder: MAEDecoderConfig, in_chans: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder = encoder
        if getattr(encoder, "reg_tokens", 0) or getattr(encoder, "no_embed_class", False):
            raise ValueError("model.model_kwargs: MAE supports ViTs without register tokens and with the class token "
                             "inside the position embedding (timm's default)")
        self.patch = encoder.patch_embed.patch_size[0]
        self.grid = tuple(encoder.patch_embed.grid_size)
        self.in_chans = in_chans
        self.num_prefix = encoder.num_prefix_tokens
        num_patches = self.grid[0] * self.grid[1]
        width = encoder.embed_dim
        self.decoder_embed = nn.Linear(width, decoder.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + num_patches, decoder.embed_dim))
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder.embed_dim, decoder.num_heads, decoder.mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(decoder.depth)])
        self.decoder_norm = nn.LayerNorm(decoder.embed_dim)
        self.decoder_pred = nn.Linear(decoder.embed_dim, self.patch * self.patch * in_chans)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def token_norm(self) -> nn.Module:
        """The encoder's final norm over tokens. A ViT that average-pools (``global_pool='avg'``) has its final norm
        after pooling (timm's ``fc_norm``; ``norm`` is an identity): pretraining applies that one to every token."""
        enc = self.encoder
        return enc.fc_norm if isinstance(enc.norm, nn.Identity) and not isinstance(enc.fc_norm, nn.Identity) \
            else enc.norm

    def encode(self, imgs: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Encoder tokens ([prefix, visible patches]) after the final norm; ``keep=None`` encodes every patch."""
        enc = self.encoder
        x = enc._pos_embed(enc.patch_embed(imgs))  # prefix tokens + position embedding, as timm's forward does
        if keep is not None:
            prefix, patches = x[:, :self.num_prefix], x[:, self.num_prefix:]
            patches = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))
            x = torch.cat([prefix, patches], dim=1)
        x = enc.norm_pre(enc.patch_drop(x))
        x = enc.blocks(x)
        return self.token_norm(x)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, N, p·p·C) of every patch from the visible tokens and mask tokens."""
        x = self.decoder_embed(latent)
        prefix, visible = x[:, :self.num_prefix], x[:, self.num_prefix:]
        n_hidden = restore.shape[1] - visible.shape[1]
        x = torch.cat([visible, self.mask_token.expand(x.shape[0], n_hidden, -1)], dim=1)
        x = torch.gather(x, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, x], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, self.num_prefix:])

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, norm_pix: bool = True, generator=None):
        """(loss, predicted patches, mask) for a batch of images."""
        if imgs.shape[-2] != self.grid[0] * self.patch or imgs.shape[-1] != self.grid[1] * self.patch:
            raise ValueError(f"MAE input is {tuple(imgs.shape[-2:])}; the encoder was built for "
                             f"{self.grid[0] * self.patch}×{self.grid[1] * self.patch} images")
        keep, restore, mask = random_masking(self.grid[0] * self.grid[1], imgs.shape[0], mask_ratio, imgs.device,
                                             generator)
        pred = self.decode(self.encode(imgs, keep), restore)
        loss = masked_patch_loss(pred, patchify(imgs, self.patch), mask, norm_pix)
        return loss, pred, mask


__all__ = ["MAEDecoderConfig", "MaskedAutoencoderViT", "build_vit_encoder", "masked_patch_loss", "patchify",
           "random_masking", "unpatchify"]
