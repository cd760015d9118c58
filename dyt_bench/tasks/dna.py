"""DNA tasks with HyenaDNA: causal-LM pretraining on a genome (``val/loss``, ``val/ppl`` per base, ``val/acc`` of the
next base) and sequence classification fine-tuning (``val/acc``, ``test/acc``, ``test/acc_at_best_val``), optionally
initialised from a pretraining checkpoint."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dyt_bench.datamodules.dna import DNA_VOCAB_SIZE, PAD_ID
from dyt_bench.models.hyena import HyenaClassifier, HyenaConfig, HyenaLM, placement_report
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig

# Fields that must agree between a pretraining checkpoint and the model it initialises (they shape the weights or,
# for l_max, the positional features the filters were trained on).
ARCH_FIELDS = ("vocab_size", "d_model", "n_layer", "d_inner", "l_max", "order", "filter_order", "emb_dim",
               "short_filter_order", "num_inner_mlps", "modulate", "embedding_scale")


class _HyenaTask(BenchTask):
    """What both DNA tasks share: the HyenaDNA config, the norm report, and the architecture saved in checkpoints."""

    hyena_config: HyenaConfig

    def _describe(self, size: str | None, backbone) -> None:
        cfg = self.hyena_config
        self.model_name = f"hyenadna-{size or 'custom'}-d{cfg.d_model}-l{cfg.n_layer}"
        self.norm_report = placement_report(backbone)
        rank_zero_info(str(self.norm_report))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyena_config"] = self.hyena_config.to_dict()
        checkpoint["norm_spec"] = self.norm_spec.to_dict()

    def _check_length(self, have: int | None, field: str) -> None:
        if have is not None and have > self.hyena_config.l_max:
            raise ValueError(f"{field}={have} exceeds model.l_max={self.hyena_config.l_max}; raise model.l_max "
                             f"(or pick a model.size made for longer sequences)")


class DNAPretraining(_HyenaTask):
    """Next-base prediction on genome windows (HyenaDNA pretraining).

    Args:
        size: a HyenaDNA size by name (tiny, tiny-d256, tiny-16k, small, medium-160k, medium-450k, large), or null to
            give every field; the fields below override it when set.
        d_model, n_layer, d_inner, l_max, embed_dropout, resid_dropout: architecture overrides.
        embedding_scale: multiply the token embeddings by a learnable scalar (initialised to
            ``embedding_scale_init``, default √d_model), the paper's LLaMA fix for small embeddings. Default (null):
            off, as in HyenaDNA and the paper's HyenaDNA runs (it names the scale for LLaMA only).
        norm: the norm placed at HyenaDNA's LayerNorm positions (default layernorm; ``dyt`` for DyT).
        optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "dna_pretraining"
    metric_modes = {"val/loss": "min", "val/ppl": "min", "val/acc": "max"}

    def __init__(
        self,
        size: str | None = "tiny",
        d_model: int | None = None,
        n_layer: int | None = None,
        d_inner: int | None = None,
        l_max: int | None = None,
        embed_dropout: float | None = None,
        resid_dropout: float | None = None,
        embedding_scale: bool | None = None,
        embedding_scale_init: float | None = None,
        vocab_size: int = DNA_VOCAB_SIZE,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm or NormSpec("layernorm"), optim=optim, divergence=divergence,
                         track_alpha=track_alpha, track_saturation=track_saturation)
        self.save_hyperparameters()
        self.hyena_config = HyenaConfig.from_size(size, d_model=d_model, n_layer=n_layer, d_inner=d_inner,
                                                  l_max=l_max, embed_dropout=embed_dropout,
                                                  resid_dropout=resid_dropout, vocab_size=vocab_size,
                                                  embedding_scale=embedding_scale,
                                                  embedding_scale_init=embedding_scale_init)
        self.net = HyenaLM(self.hyena_config, self.norm_spec)
        self._describe(size, self.net.backbone)
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()

    def setup(self, stage: str) -> None:
        self.check_datamodule(vocab_size=self.hyena_config.vocab_size)
        dm = self.trainer.datamodule if self._trainer is not None else None
        self._check_length(getattr(dm, "seq_len", None), "data.seq_len")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids)

    def _loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean next-token cross-entropy over non-padding targets, the number of correct predictions, and that count."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self(inputs).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD_ID)
        valid = targets != PAD_ID
        correct = ((logits.argmax(-1) == targets) & valid).sum()
        return loss, correct, valid.sum()

    def throughput_units(self, batch: torch.Tensor) -> dict[str, float]:
        """Predicted tokens in a training batch: result.json reports train_tokens_per_s."""
        return {"tokens": batch.shape[0] * (batch.shape[1] - 1)}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss, correct, count = self._loss(batch)
        self.val_loss.update(loss, weight=count)
        self.val_acc.update(correct / count.clamp_min(1), weight=count)
        self.log("val/loss", loss, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        mean = self.val_loss.compute()
        self.log("val/ppl", torch.exp(mean) if math.isfinite(float(mean)) else mean)
        self.log("val/acc", self.val_acc.compute())
        self.val_loss.reset()
        self.val_acc.reset()

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss, _, _ = self._loss(batch)
        self.log("test/loss", loss)

    def probe_forward(self, batch):
        return self(batch[:, :-1].to(self.device))


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint file, or ``last.ckpt`` (else the newest ``*.ckpt``) inside a directory or its ``checkpoints/``."""
    p = Path(os.path.expanduser(path))
    if p.is_file():
        return p
    if p.is_dir():
        for folder in (p, p / "checkpoints"):
            if (folder / "last.ckpt").is_file():
                return folder / "last.ckpt"
            ckpts = sorted(folder.glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
            if ckpts:
                return ckpts[-1]
    raise FileNotFoundError(f"model.init_from: no checkpoint at {p} (give a .ckpt file, or a run directory holding "
                            f"checkpoints/last.ckpt); pretrain first, e.g. dyt-bench fit --config "
                            f"configs/dna/hg38_pretrain_layernorm.yaml")


def load_backbone(backbone: torch.nn.Module, path: str, config: HyenaConfig, norm: NormSpec,
                  strict: bool = True) -> dict:
    """Copy the backbone weights of a DNA checkpoint (pretraining or fine-tuning) into ``backbone``.

    Fails with a message naming the difference when the architecture or norm kind disagrees, or (``strict``) when
    any backbone tensor is missing, extra or of another shape. Returns what was loaded.
    """
    file = resolve_checkpoint(path)
    from dyt_bench.results import load_torch_file

    ckpt = load_torch_file(file, "model.init_from")  # tensors and plain data only: a crafted pickle is refused
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.init_from: {file} is not a checkpoint (no state_dict)")
    saved_cfg = ckpt.get("hyena_config")
    if saved_cfg is not None:
        diffs = [f"{k}: checkpoint {saved_cfg.get(k)!r} vs model {getattr(config, k)!r}"
                 for k in ARCH_FIELDS if k in saved_cfg and saved_cfg[k] != getattr(config, k)]
        if diffs:
            raise ValueError(f"model.init_from: {file} was trained with another architecture; set the model fields to "
                             f"match it ({'; '.join(diffs)})")
    saved_norm = (ckpt.get("norm_spec") or {}).get("kind")
    if saved_norm is not None and saved_norm != norm.kind:
        raise ValueError(f"model.init_from: {file} was trained with norm {saved_norm!r} but model.norm.kind is "
                         f"{norm.kind!r}; fine-tune with the norm the backbone was pretrained with")
    prefix = "net.backbone."
    source = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not source:
        raise ValueError(f"model.init_from: {file} holds no HyenaDNA backbone weights (keys '{prefix}*')")
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in source)
    unexpected = sorted(k for k in source if k not in own)
    mismatched = sorted(k for k in own if k in source and source[k].shape != own[k].shape)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(f"model.init_from: {file} does not fit the backbone: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}, shape mismatch {mismatched[:8]} (model.init_strict: false loads the rest)")
    loadable = {k: v for k, v in source.items() if k in own and k not in mismatched}
    backbone.load_state_dict(loadable, strict=False)
    report = {"path": str(file), "loaded": len(loadable), "total": len(own), "missing": missing,
              "unexpected": unexpected, "mismatched": mismatched}
    rank_zero_info(f"[dna] init_from {file}: loaded {len(loadable)}/{len(own)} backbone tensors"
                   + (f"; missing {missing}" if missing else "") + (f"; unexpected {unexpected}" if unexpected else "")
                   + (f"; shape mismatch {mismatched}" if mismatched else ""))
    return report


class DNAClassification(_HyenaTask):
    """Sequence classification with a HyenaDNA backbone and a linear head over pooled hidden states (GenomicBenchmarks).

    Args:
        num_classes: number of classes (checked against the datamodule).
        size, d_model, n_layer, d_inner, l_max, embed_dropout, resid_dropout, embedding_scale,
            embedding_scale_init: as in :class:`DNAPretraining`; with
            ``init_from`` they must match the checkpoint's.
        pooling: ``mean`` over real tokens, or ``last`` token.
        init_from: a pretraining checkpoint (file or run directory) whose backbone initialises this one; the head
            starts fresh. ``init_strict``: fail unless every backbone tensor is found (default true).
        freeze_backbone: train the head only.
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "dna_classification"
    metric_modes = {"val/acc": "max", "val/loss": "min", "test/acc": "max", "test/acc_at_best_val": "max"}

    def __init__(
        self,
        num_classes: int = 2,
        size: str | None = "tiny",
        d_model: int | None = None,
        n_layer: int | None = None,
        d_inner: int | None = None,
        l_max: int | None = None,
        embed_dropout: float | None = None,
        resid_dropout: float | None = None,
        embedding_scale: bool | None = None,
        embedding_scale_init: float | None = None,
        vocab_size: int = DNA_VOCAB_SIZE,
        pooling: str = "mean",
        init_from: str | None = None,
        init_strict: bool = True,
        freeze_backbone: bool = False,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm or NormSpec("layernorm"), optim=optim, divergence=divergence,
                         track_alpha=track_alpha, track_saturation=track_saturation)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.hyena_config = HyenaConfig.from_size(size, d_model=d_model, n_layer=n_layer, d_inner=d_inner,
                                                  l_max=l_max, embed_dropout=embed_dropout,
                                                  resid_dropout=resid_dropout, vocab_size=vocab_size,
                                                  embedding_scale=embedding_scale,
                                                  embedding_scale_init=embedding_scale_init)
        self.net = HyenaClassifier(self.hyena_config, num_classes, self.norm_spec, pooling)
        self._describe(size, self.net.backbone)
        self.init_report = (load_backbone(self.net.backbone, init_from, self.hyena_config, self.norm_spec, init_strict)
                            if init_from else None)
        if freeze_backbone:
            self.net.backbone.requires_grad_(False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.best_val_acc = -1.0
        self.test_acc_at_best_val = float("nan")

    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, vocab_size=self.hyena_config.vocab_size)
        dm = self.trainer.datamodule if self._trainer is not None else None
        hp = getattr(dm, "hparams", {})
        self._check_length(hp.get("max_length") if hasattr(hp, "get") else None, "data.max_length")

    def chance_levels(self) -> dict[str, float]:
        """Accuracy of a guess uniform over the classes: 1 / num_classes."""
        return {name: 1 / self.num_classes for name in ("val/acc", "test/acc", "test/acc_at_best_val")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def throughput_units(self, batch) -> dict[str, float]:
        """Input tokens (padding included) in a training batch: result.json reports train_tokens_per_s."""
        return {"tokens": batch[0].numel()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        ids, mask, labels = batch
        logits = self(ids, mask).float()
        loss = F.cross_entropy(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean())
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        ids, mask, labels = batch
        logits = self(ids, mask).float()
        if dataloader_idx == 0:
            self.val_loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
            self.val_acc.update(logits, labels)
        else:  # the test split, when the datamodule evaluates it at every validation
            self.test_acc.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        val_acc = self.val_acc.compute()
        self.log("val/acc", val_acc, prog_bar=True, add_dataloader_idx=False)
        self.log("val/loss", self.val_loss.compute(), add_dataloader_idx=False)
        has_test = self.test_acc.update_count > 0
        if has_test:
            test_acc = self.test_acc.compute()
            self.log("test/acc", test_acc, add_dataloader_idx=False)
            if not self.trainer.sanity_checking and float(val_acc) > self.best_val_acc:
                self.best_val_acc = float(val_acc)
                self.test_acc_at_best_val = float(test_acc)
            if not self.trainer.sanity_checking:
                self.log("test/acc_at_best_val", self.test_acc_at_best_val, add_dataloader_idx=False)
        self.val_acc.reset()
        self.test_acc.reset()
        self.val_loss.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        ids, mask, labels = batch
        logits = self(ids, mask).float()
        self.test_acc.update(logits, labels)
        self.log("test/loss", F.cross_entropy(logits, labels))

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute())
        self.test_acc.reset()

    def probe_forward(self, batch):
        ids, mask = batch[0], batch[1]
        return self(ids.to(self.device), mask.to(self.device))


__all__ = ["DNAClassification", "DNAPretraining", "load_backbone", "resolve_checkpoint"]
