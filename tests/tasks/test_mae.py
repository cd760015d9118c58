"""MAE task: trains on digits with LayerNorm and DyT (encoder and decoder swapped), records val/loss and the k-NN
monitor, and its checkpoint initialises a fine-tuned ViT with every encoder tensor verified; a slow test shows the
pretrained encoder's linear probe beating a random-init encoder's."""

import json

import pytest
import torch
from helpers import tiny_trainer

from dyt_bench.datamodules import ImageDataModule
from dyt_bench.datamodules.multicrop import MultiCropDataModule
from dyt_bench.norms.layers import SquashNorm
from dyt_bench.tasks import MAEPretraining, OptimConfig, PretrainedViTEvaluation

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = {"patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "avg", "class_token": False}
DECODER = {"embed_dim": 16, "depth": 1, "num_heads": 2}


def mae_task(kind, **kwargs):
    return MAEPretraining(model="vit_tiny_patch16_224", img_size=8, in_chans=1, model_kwargs=VIT, decoder=DECODER,
                          norm={"kind": kind}, optim=OptimConfig(lr=1.5e-3, warmup_steps=5), **kwargs)


def mae_data(**kwargs):
    return MultiCropDataModule(source="digits", img_size=8, in_chans=1, batch_size=64,
                               crops={"global_crops": 1, "global_scale": [0.5, 1.0], "hflip": 0.0}, **kwargs)


def probe(tmp_path, kind, init_from, protocol="linear_probe", steps=6, lr=1e-2):
    torch.manual_seed(0)
    task = PretrainedViTEvaluation(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                   model_kwargs=VIT, protocol=protocol, init_from=init_from, norm={"kind": kind},
                                   optim=OptimConfig(lr=lr, warmup_steps=0, weight_decay=0.0))
    trainer = tiny_trainer(tmp_path, max_steps=steps, val_check_interval=steps, check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=ImageDataModule(source="digits", img_size=8, in_chans=1, batch_size=64))
    return task, json.loads((tmp_path / "result.json").read_text())


def pretrain(tmp_path, kind, steps):
    torch.manual_seed(0)
    task = mae_task(kind)
    trainer = tiny_trainer(tmp_path, max_steps=steps, enable_checkpointing=True, val_check_interval=steps,
                           check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=mae_data())
    return task, trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_mae_trains_and_fine_tunes_from_its_checkpoint(tmp_path, kind):
    task, ckpt = pretrain(tmp_path / "pre", kind, steps=4)
    if kind == "dyt":
        assert not any(isinstance(m, torch.nn.LayerNorm) for m in task.net.modules())
        assert isinstance(task.net.decoder_norm, SquashNorm) and isinstance(task.net.encoder.fc_norm, SquashNorm)
    pre = json.loads((tmp_path / "pre" / "result.json").read_text())
    assert pre["status"] == "completed" and pre["task"] == "mae_pretraining"
    assert {"val/loss", "val/knn_acc"} <= set(pre["metrics_final"]) and 0 <= pre["metrics_final"]["val/knn_acc"] <= 1

    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ft, result = probe(tmp_path / "ft", kind, ckpt, protocol="finetune", steps=1, lr=1e-12)
    assert result["evaluation"]["loaded"] == result["evaluation"]["total"] == len(ft.encoder.state_dict())
    for name, value in ft.encoder.state_dict().items():  # an lr of 1e-12: the weights are still the checkpoint's
        assert torch.allclose(value, saved[f"net.encoder.{name}"], atol=1e-6), name
    assert "val/acc1" in result["metrics_final"] and result["evaluation"]["protocol"] == "finetune"


def test_checkpoint_that_does_not_fit_is_refused(tmp_path):
    _, ckpt = pretrain(tmp_path / "pre", "dyt", steps=1)
    with pytest.raises(ValueError, match="pretrained with norm 'dyt'"):
        PretrainedViTEvaluation(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                model_kwargs=VIT, init_from=ckpt, norm={"kind": "layernorm"})
    with pytest.raises(ValueError, match="another encoder"):
        PretrainedViTEvaluation(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                model_kwargs={**VIT, "depth": 3}, init_from=ckpt, norm={"kind": "dyt"})
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state["state_dict"]["net.encoder.blocks.0.attn.qkv.weight"]
    torch.save(state, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match="missing.*blocks.0.attn.qkv.weight"):
        PretrainedViTEvaluation(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                model_kwargs=VIT, init_from=str(tmp_path / "broken.ckpt"), norm={"kind": "dyt"})
    with pytest.raises(ValueError, match="model.protocol must be one of linear_probe, finetune"):
        PretrainedViTEvaluation(protocol="knn")
    with pytest.raises(ValueError, match="model.mask_ratio"):
        mae_task("dyt", mask_ratio=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_pretrained_encoder_probes_better_than_random_init(tmp_path, kind):
    _, ckpt = pretrain(tmp_path / "pre", kind, steps=300)
    _, pretrained = probe(tmp_path / "probe_pre", kind, ckpt, steps=200)
    _, random_init = probe(tmp_path / "probe_rand", kind, None, steps=200)
    acc_pre, acc_rand = pretrained["metrics_final"]["val/acc1"], random_init["metrics_final"]["val/acc1"]
    print(f"MAE {kind}: linear probe {acc_pre:.4f} pretrained vs {acc_rand:.4f} random init; k-NN "
          f"{pretrained['evaluation']['knn_acc_before_training']:.4f} vs "
          f"{random_init['evaluation']['knn_acc_before_training']:.4f}")
    assert acc_pre > acc_rand + 0.03
