"""Paper-scale image classification on CPU: every model family under each norm, the Table 9 recipe on generated
ImageFolder and CIFAR-format data, EMA evaluation, and linear learning-rate scaling."""

import pickle

import numpy as np
import pytest
import torch
from helpers import tiny_trainer
from PIL import Image
from torch import nn

from dyt_bench.datamodules import AugmentConfig, ImageDataModule
from dyt_bench.norms import ChannelsFirstLayerNorm, SquashNorm, count_norms
from dyt_bench.results import read_result
from dyt_bench.tasks import EmaConfig, ImageClassification, MixupConfig, OptimConfig

# name, constructor overrides, expected number of norm layers, input size
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", {"model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}, 5),
    "convnext": ("convnext_atto", {}, None),
    "mixer": ("mixer_s16_224", {}, 17),  # timm fixes a Mixer entrypoint's size: 8 blocks × 2 + final norm
    "resnet": ("resnet18", {"small_input": True}, 20),
    "vgg16+insert": ("vgg16", {"small_input": True, "insert_norms": True}, 13),
    "vgg16_bn": ("vgg16_bn", {"small_input": True}, 13),
}


def _task(name, kind, **kw):
    return ImageClassification(model=name, num_classes=4, img_size=32, in_chans=3, norm={"kind": kind}, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "dyt"])
def test_family_builds_with_expected_norms(family, kind):
    name, kw, expected = FAMILIES[family]
    task = _task(name, kind, **kw)
    report = task.norm_report
    if expected is not None:
        assert report.total == expected
    assert report.total > 0
    counts = count_norms(task.net)
    layouts = report.layouts
    if kind == "dyt":
        assert counts == {"SquashNorm": report.total}
        assert {m.layout for m in task.net.modules() if isinstance(m, SquashNorm)} == set(layouts)
    elif kind == "batchnorm":
        assert counts == {"BatchNorm": report.total}
    else:
        assert counts.get("LayerNorm", 0) == layouts.get("channels_last", 0)
        assert counts.get("ChannelsFirstLayerNorm", 0) == layouts.get("channels_first", 0)
    assert task(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_convnext_uses_channels_first_norms():
    task = _task("convnext_atto", "layernorm")
    assert any(isinstance(m, ChannelsFirstLayerNorm) for m in task.net.modules())


def _imagefolder(root, classes=2, per_class=4, size=40):
    gen = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(gen.integers(0, 255, (size, size + 5, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _cifar10(root, n=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": gen.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": gen.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


RECIPE = dict(label_smoothing=0.1, mixup=MixupConfig(), ema=EmaConfig(decay=0.9),
              optim=OptimConfig(lr=4e-3, lr_base_batch=4096, warmup_epochs=1),
              model_kwargs={"drop_path_rate": 0.1})


def test_imagefolder_with_the_full_recipe(tmp_path):
    root = _imagefolder(tmp_path / "data")
    data = ImageDataModule(source="imagefolder", root=str(root), img_size=32, in_chans=3, num_classes=2, batch_size=4)
    data.setup("fit")
    x, _ = data.train_set[0]
    assert x.shape == (3, 32, 32)
    assert "RandAugment" in str(data.train_set.transform) and "RandomErasing" in str(data.train_set.transform)
    assert "CenterCrop" in str(data.val_set.transform)
    task = ImageClassification(model="convnext_atto", num_classes=2, img_size=32, in_chans=3, norm={"kind": "dyt"},
                               **RECIPE)
    tiny_trainer(tmp_path, fast_dev_run=2).fit(task, datamodule=data)
    assert read_result(tmp_path).status == "completed"


def test_cifar_format_with_the_full_recipe(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    # The generated files have the real layout but not the real checksums torchvision verifies.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    root = _cifar10(tmp_path / "data")
    data = ImageDataModule(source="cifar10", root=str(root), img_size=32, in_chans=3, num_classes=10, batch_size=4)
    task = ImageClassification(model="vit_tiny_patch16_224", num_classes=10, img_size=32, in_chans=3,
                               norm={"kind": "dyt"}, **{**RECIPE, "model_kwargs": {"patch_size": 8, "embed_dim": 32,
                                                                                  "depth": 1, "num_heads": 2}})
    tiny_trainer(tmp_path, fast_dev_run=2).fit(task, datamodule=data)
    assert read_result(tmp_path).status == "completed"
    assert len(data.train_set) == 5 * 8 and len(data.val_set) == 8


def test_missing_data_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/ or val/"):
        ImageDataModule(source="imagefolder", root=str(tmp_path), num_classes=2, in_chans=3).setup()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        ImageDataModule(source="cifar10", root=str(tmp_path), num_classes=10, in_chans=3).setup()
    with pytest.raises(ValueError, match="data.root is required"):
        ImageDataModule(source="cifar100", num_classes=100, in_chans=3)
    with pytest.raises(ValueError, match="re_prob"):
        AugmentConfig(re_prob=2.0)


def test_ema_weights_are_what_validation_evaluates(tmp_path):
    torch.manual_seed(0)
    task = ImageClassification(model="resnet18", small_input=True, num_classes=10, img_size=8, in_chans=1,
                               norm={"kind": "dyt"}, ema=EmaConfig(decay=0.99), optim=OptimConfig(lr=1e-2))
    data = ImageDataModule(source="synthetic", img_size=8, in_chans=1, batch_size=16, synthetic_samples=64)
    tiny_trainer(tmp_path, max_steps=8, limit_val_batches=0).fit(task, datamodule=data)
    logged = tiny_trainer(tmp_path / "validate").validate(task, datamodule=data, verbose=False)[0]["val/loss"]
    ema_params = dict(task.ema.module.named_parameters())
    assert any(not torch.equal(p, ema_params[n]) for n, p in task.net.named_parameters())  # they differ
    losses = {}
    for which, net in (("ema", task.ema.module), ("model", task.net)):
        net.eval()
        with torch.no_grad():
            total, n = 0.0, 0
            for x, y in data.val_dataloader():
                total += nn.functional.cross_entropy(net(x), y, reduction="sum").item()
                n += len(y)
        losses[which] = total / n
    assert logged == pytest.approx(losses["ema"], rel=1e-5)
    assert abs(losses["ema"] - losses["model"]) > 10 * abs(logged - losses["ema"]) + 1e-4


def test_no_decay_groups_on_convnext_with_dyt():
    task = _task("convnext_atto", "dyt")
    decay, no_decay = task.parameter_groups()
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name, p in task.net.named_parameters():
        is_norm = any(isinstance(m, SquashNorm) and any(q is p for q in m.parameters()) for m in task.net.modules())
        if is_norm or name.endswith(".bias") or name.endswith("gamma"):
            assert id(p) in no_decay_ids, name
    assert all(p.ndim >= 2 for p in decay["params"])


def test_learning_rate_scales_with_global_batch(tmp_path):
    task = _task("resnet18", "dyt", small_input=True, optim=OptimConfig(lr=4e-3, lr_base_batch=4096, warmup_steps=0))
    data = ImageDataModule(source="synthetic", img_size=32, in_chans=3, num_classes=4, batch_size=8,
                           synthetic_samples=16)
    trainer = tiny_trainer(tmp_path, max_steps=1, accumulate_grad_batches=2, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    expected = 4e-3 * (8 * 2) / 4096
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(expected)
