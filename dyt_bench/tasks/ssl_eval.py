"""What the self-supervised tasks share: the weighted k-NN monitor, loading a pretrained ViT encoder with every tensor
verified, and the evaluation task (linear probe, the DINO protocol; fine-tuning, the MAE protocol)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Subset
from torchmetrics.classification import MulticlassAccuracy

from dyt_bench.models.mae import build_vit_encoder
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .dna import resolve_checkpoint
from .optim import OptimConfig

PROTOCOLS = ("linear_probe", "finetune")
KNN_BANK_SIZE = 10000  # training images in the bank of the before-training k-NN measurement (a fixed subset)
CHECKPOINT_KEY = "ssl_encoder"  # checkpoint entry naming the encoder's architecture, norm and state-dict prefix


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of DINO's weighted k-NN classifier: the ``k`` nearest bank features by cosine similarity vote for
    their class with weight exp(similarity / temperature). Uses scikit-learn's ``KNeighborsClassifier``."""
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(bank_labels))

    def weights(dist):  # cosine distance = 1 - similarity
        return torch.exp(torch.as_tensor((1 - dist) / temperature, dtype=torch.float64)).numpy()

    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weights, algorithm="brute")
    clf.fit(bank.double().cpu().numpy(), bank_labels.cpu().numpy())
    pred = clf.predict(query.double().cpu().numpy())
    return float((torch.as_tensor(pred) == query_labels.cpu()).double().mean())


class KnnMonitor:
    """The k-NN monitor of a pretraining task: validation loader 0 is the feature bank (un-augmented training images),
    loader 1 the validation images; after the last validation batch ``val/knn_acc`` is logged. Pretraining tasks
    mix it in and implement ``encoder_features(images)`` (pooled encoder features)."""

    knn_k: int = 20
    knn_temperature: float = 0.07

    def _reset_knn(self) -> None:
        self._bank: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._query: list[tuple[torch.Tensor, torch.Tensor]] = []

    def knn_step(self, batch, batch_idx: int, dataloader_idx: int) -> None:
        if not hasattr(self, "_bank") or (dataloader_idx == 0 and batch_idx == 0):
            self._reset_knn()
        x, y = batch
        with torch.no_grad():
            feats = F.normalize(self.encoder_features(x).float(), dim=-1)
        (self._bank if dataloader_idx == 0 else self._query).append((feats.cpu(), y.cpu()))
        n_batches = self.trainer.num_val_batches
        last = n_batches[dataloader_idx] if isinstance(n_batches, list) else n_batches
        if dataloader_idx == 1 and batch_idx == int(last) - 1 and self._bank:
            bank, bank_y = (torch.cat(t) for t in zip(*self._bank, strict=False))
            query, query_y = (torch.cat(t) for t in zip(*self._query, strict=False))
            acc = knn_accuracy(bank, bank_y, query, query_y, self.knn_k, self.knn_temperature)
            self.log("val/knn_acc", acc, prog_bar=True, add_dataloader_idx=False, batch_size=1)
            self._reset_knn()


def load_encoder(encoder: torch.nn.Module, path: str, norm: NormSpec, expected: dict[str, Any]) -> dict:
    """Copy a pretraining checkpoint's encoder into ``encoder`` (a timm ViT; its ``head.*`` is not part of it).

    Fails, naming the difference, when the checkpoint's encoder architecture (``expected``: model, img_size,
    in_chans, model_kwargs) or norm kind differs, or when any encoder tensor is missing, extra or of another shape:
    every tensor is verified loaded. Returns what was loaded (recorded in result.json ``evaluation``).
    """
    file = resolve_checkpoint(path)
    from dyt_bench.results import load_torch_file

    ckpt = load_torch_file(file, "model.init_from")  # tensors and plain data only: a crafted file runs no code
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not meta:
        raise ValueError(f"model.init_from: {file} is not a self-supervised pretraining checkpoint (no "
                         f"'{CHECKPOINT_KEY}' entry; pretrain with dyt_bench.tasks.MAEPretraining or DINOPretraining)")
    diffs = [f"{k}: checkpoint {meta['arch'].get(k)!r} vs model {v!r}" for k, v in expected.items()
             if meta["arch"].get(k) != v]
    if diffs:
        raise ValueError(f"model.init_from: {file} holds another encoder; set the model fields to match it "
                         f"({'; '.join(diffs)})")
    if meta["norm"].get("kind") != norm.kind:
        raise ValueError(f"model.init_from: {file} was pretrained with norm {meta['norm'].get('kind')!r} but "
                         f"model.norm.kind is {norm.kind!r}; evaluate with the norm the encoder was pretrained with")
    prefix = meta["prefix"]
    source = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    own = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    missing = sorted(k for k in own if k not in source)
    unexpected = sorted(k for k in source if k not in own)
    mismatched = sorted(k for k in own if k in source and source[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(f"model.init_from: {file} does not fit the encoder: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}, shape mismatch {mismatched[:8]}")
    result = encoder.load_state_dict(source, strict=False)
    left = [k for k in result.missing_keys if not k.startswith("head.")]
    if left or result.unexpected_keys:  # cannot happen after the checks above; kept as the final word
        raise ValueError(f"model.init_from: tensors not loaded: {left or result.unexpected_keys}")
    rank_zero_info(f"[ssl] init_from {file}: loaded {len(source)}/{len(own)} encoder tensors ({prefix}*)")
    return {"init_from": str(file), "encoder_prefix": prefix, "loaded": len(source), "total": len(own),
            "pretrain_task": meta.get("task", "")}


class PretrainedViTEvaluation(BenchTask):
    """Evaluate a self-supervised ViT encoder on labelled images: ``linear_probe`` (encoder frozen, in eval mode, one
    linear layer on its pooled features — DINO's protocol) or ``finetune`` (the whole ViT with a new head — MAE's).

    Args:
        model, img_size, in_chans, model_kwargs: the encoder (must match the checkpoint's).
        num_classes: classes of the labelled data.
        protocol: ``linear_probe`` or ``finetune``.
        init_from: a pretraining checkpoint (file or run directory); every encoder tensor must load. Null: a
            randomly initialised encoder (the baseline a pretrained encoder must beat).
        label_smoothing: cross-entropy label smoothing (fine-tuning recipe: 0.1).
        probe_batchnorm: a BatchNorm without affine parameters between the frozen features and the linear layer
            (MAE's linear probe; it standardises the features so one learning rate suits any encoder); linear probe
            only. It is part of the classifier, not of the encoder, so the norm swap leaves it alone.
        knn_k, knn_temperature: the k-NN accuracy of the encoder, measured once before training (``evaluation``).
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "ssl_evaluation"
    metric_modes = {"val/acc1": "max", "val/loss": "min"}

    def __init__(
        self,
        model: str = "vit_small_patch16_224",
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        protocol: str = "linear_probe",
        init_from: str | None = None,
        label_smoothing: float = 0.0,
        probe_batchnorm: bool = True,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm, optim=optim, divergence=divergence, track_alpha=track_alpha,
                         track_saturation=track_saturation)
        if protocol not in PROTOCOLS:
            raise ValueError(f"model.protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2; got {num_classes}")
        self.save_hyperparameters()
        self.protocol, self.num_classes, self.img_size, self.in_chans = protocol, num_classes, img_size, in_chans
        self.label_smoothing, self.knn_k, self.knn_temperature = label_smoothing, knn_k, knn_temperature
        self.model_name = f"{model} ({protocol})"
        encoder = build_vit_encoder(model, img_size, in_chans, model_kwargs, num_classes=0)
        self.encoder = self.place_norms(encoder)
        arch = {"model": model, "img_size": img_size, "in_chans": in_chans, "model_kwargs": dict(model_kwargs or {})}
        self.init_report = load_encoder(self.encoder, init_from, self.norm_spec, arch) if init_from else None
        self.evaluation = {"protocol": protocol, "pretrained": init_from is not None, **(self.init_report or {})}
        linear = torch.nn.Linear(self.encoder.num_features, num_classes)
        torch.nn.init.trunc_normal_(linear.weight, std=0.01)
        torch.nn.init.zeros_(linear.bias)
        self.head = linear
        if protocol == "linear_probe" and probe_batchnorm:
            self.head = torch.nn.Sequential(
                torch.nn.BatchNorm1d(self.encoder.num_features, affine=False, eps=1e-6), linear)
        if protocol == "linear_probe":
            self.encoder.requires_grad_(False)
        self.val_acc1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, average="micro")

    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_chans)

    def chance_levels(self) -> dict[str, float]:
        return {"val/acc1": 1 / self.num_classes, "test/acc1": 1 / self.num_classes}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.protocol == "linear_probe":
            self.encoder.eval()  # frozen features: dropout / drop-path off, as at evaluation
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features (the ViT's own pooling and final norms)."""
        if self.protocol == "linear_probe":
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def on_fit_start(self) -> None:
        """Record the encoder's k-NN accuracy (train split as bank, validation split as queries) before training."""
        dm = self.trainer.datamodule
        if dm is None or self.knn_k <= 0:
            return
        was_training = self.training
        self.eval()
        feats = {}
        bank = copy.copy(dm.train_set)
        if hasattr(bank, "transform") and hasattr(dm.val_set, "transform"):
            bank.transform = dm.val_set.transform  # un-augmented training images
        if len(bank) > KNN_BANK_SIZE:
            bank = Subset(bank, torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:KNN_BANK_SIZE].tolist())
        for name, loader in (("bank", dm.loader(bank, train=False)), ("query", dm.val_dataloader())):
            out, labels = [], []
            with torch.no_grad():
                for x, y in loader:
                    out.append(F.normalize(self.encoder(x.to(self.device)).float(), dim=-1).cpu())
                    labels.append(y)
            feats[name] = (torch.cat(out), torch.cat(labels))
        self.evaluation["knn_acc_before_training"] = knn_accuracy(*feats["bank"], *feats["query"], self.knn_k,
                                                                  self.knn_temperature)
        rank_zero_info(f"[ssl] k-NN accuracy of the encoder: {self.evaluation['knn_acc_before_training']:.4f}")
        self.train(was_training)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc1", (logits.argmax(-1) == y).float().mean())
        return loss

    def _evaluate(self, batch, stage: str, acc1: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x).float()
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), prog_bar=stage == "val")
        acc1(logits, y)
        self.log(f"{stage}/acc1", acc1, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc1)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc1)


__all__ = ["KnnMonitor", "PretrainedViTEvaluation", "knn_accuracy", "load_encoder"]
