"""DINO task: multi-crop batches on digits, a teacher that is the EMA of the student (never optimised), the teacher
temperature warm-up, DyT in the backbone, and a linear probe from its checkpoint that trains the head only; a slow
test shows the pretrained teacher's linear probe beating a random-init encoder's."""

import json

import pytest
import torch
from helpers import tiny_trainer

from dyt_bench.datamodules import ImageDataModule
from dyt_bench.datamodules.multicrop import MultiCropDataModule
from dyt_bench.models.dino import cosine_schedule
from dyt_bench.tasks import DINOPretraining, OptimConfig, PretrainedViTEvaluation

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = {"patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "avg", "class_token": False}
HEAD = {"out_dim": 256, "hidden_dim": 128, "bottleneck_dim": 32}
# Two global crops only: on 8×8 digits a 4-px local crop holds too little of the digit to be matched to its global
# view (measured: with 2 local crops the probe gains 4 points over a random-init encoder, without them 8)
CROPS = {"global_crops": 2, "local_crops": 0, "global_scale": [0.3, 1.0], "hflip": 0.0}
MULTI_CROPS = {"global_crops": 2, "local_crops": 2, "local_size": 4, "global_scale": [0.5, 1.0],
               "local_scale": [0.2, 0.5], "hflip": 0.0}
# DINO's teacher momentum 0.996 (its cosine rising to 1) hardly moves the teacher in a few hundred steps (measured:
# the teacher's k-NN accuracy stayed at its random-init 0.26 for 300 steps); 0.95 and lr 2e-3 here


def dino_task(kind, lr=2e-3, dino=None, **kwargs):
    return DINOPretraining(model="vit_tiny_patch16_224", img_size=8, in_chans=1, model_kwargs=VIT, head=HEAD,
                           dino={"momentum_teacher": 0.95, **(dino or {})}, norm={"kind": kind},
                           optim=OptimConfig(lr=lr, warmup_steps=20, weight_decay=0.04), **kwargs)


def dino_data(crops=CROPS, **kwargs):
    return MultiCropDataModule(source="digits", img_size=8, in_chans=1, batch_size=64, crops=crops, **kwargs)


def pretrain(tmp_path, kind, steps, **kwargs):
    torch.manual_seed(0)
    task = dino_task(kind, **kwargs)
    trainer = tiny_trainer(tmp_path, max_steps=steps, enable_checkpointing=True, val_check_interval=steps,
                           check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=dino_data())
    return task, trainer, trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path


def linear_probe(tmp_path, kind, init_from, steps=6):
    torch.manual_seed(0)
    task = PretrainedViTEvaluation(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                   model_kwargs=VIT, protocol="linear_probe", init_from=init_from, norm={"kind": kind},
                                   optim=OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0))
    before = {k: v.clone() for k, v in task.encoder.state_dict().items()}
    linear = task.head[-1]  # after the probe's BatchNorm
    head_before = linear.weight.detach().clone()
    trainer = tiny_trainer(tmp_path, max_steps=steps, val_check_interval=steps, check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=ImageDataModule(source="digits", img_size=8, in_chans=1, batch_size=64))
    assert all(torch.equal(v, before[k]) for k, v in task.encoder.state_dict().items())  # frozen encoder
    assert not torch.equal(linear.weight, head_before)
    return json.loads((tmp_path / "result.json").read_text())


def test_multicrop_batches_hold_global_then_local_crops():
    data = dino_data(MULTI_CROPS)
    data.setup("fit")
    crops, labels = next(iter(data.train_dataloader()))
    assert [tuple(c.shape) for c in crops] == [(64, 1, 8, 8)] * 2 + [(64, 1, 4, 4)] * 2 and labels.shape == (64,)
    assert not torch.equal(crops[0], crops[1])  # two random views of the same images
    bank, val = data.val_dataloader()
    assert len(bank.dataset) == len(data.train_set) and next(iter(bank))[0].shape == (64, 1, 8, 8)
    with pytest.raises(ValueError, match="data.crops.global_scale"):
        MultiCropDataModule(source="digits", img_size=8, crops={"global_scale": [0.0, 1.0]})


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_dino_teacher_is_the_students_ema(tmp_path, kind):
    torch.manual_seed(0)
    task = dino_task(kind, dino={"warmup_teacher_temp": 0.02, "teacher_temp": 0.06,
                                 "warmup_teacher_temp_fraction": 0.5})
    assert all(not p.requires_grad for p in task.teacher.parameters())
    optimised = {id(p) for g in task.parameter_groups() for p in g["params"]}
    assert not optimised & {id(p) for p in task.teacher.parameters()}
    if kind == "dyt":
        assert task.norm_report.total == 2 * 2 + 1 and "LayerNorm" not in str(task.teacher)

    seen = []  # per step: teacher after the update == m·teacher before + (1 − m)·student after the optimizer step
    task_on_end = task.on_train_batch_end

    def on_train_batch_end(outputs, batch, batch_idx):
        t0 = task.teacher.backbone.patch_embed.proj.weight.detach().clone()
        s1 = task.student.backbone.patch_embed.proj.weight.detach().clone()
        task_on_end(outputs, batch, batch_idx)
        m = cosine_schedule(0.95, 1.0, task.global_step, task._total_steps())
        seen.append(torch.allclose(task.teacher.backbone.patch_embed.proj.weight, m * t0 + (1 - m) * s1, atol=1e-7))

    task.on_train_batch_end = on_train_batch_end
    trainer = tiny_trainer(tmp_path, max_steps=4, val_check_interval=4, check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=dino_data())
    assert seen == [True] * 4
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    col = header.index("train/teacher_temp")
    logged = [float(r.split(",")[col]) for r in metrics[1:] if r.split(",")[col]]
    assert logged[:2] == pytest.approx([0.02, 0.04]) and logged[-1] == pytest.approx(0.06)  # 0.5 × 4 steps warm-up
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and "val/knn_acc" in result["metrics_final"]
    assert not torch.equal(task.teacher.head.last_direction, task.student.head.last_direction)


def test_linear_probe_loads_the_teacher_backbone(tmp_path):
    task, _, ckpt = pretrain(tmp_path / "pre", "dyt", steps=2)
    result = linear_probe(tmp_path / "probe", "dyt", ckpt)
    ev = result["evaluation"]
    assert ev["encoder_prefix"] == "teacher.backbone." and ev["loaded"] == ev["total"] > 0
    assert ev["pretrain_task"] == "dino_pretraining" and 0 <= ev["knn_acc_before_training"] <= 1
    with pytest.raises(ValueError, match="model.global_crops=3 but data.crops.global_crops=2"):
        bad = dino_task("dyt", global_crops=3)
        tiny_trainer(tmp_path / "bad", max_steps=1).fit(bad, datamodule=dino_data())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_pretrained_teacher_probes_better_than_random_init(tmp_path, kind):
    _, _, ckpt = pretrain(tmp_path / "pre", kind, steps=300)
    pretrained = linear_probe(tmp_path / "probe_pre", kind, ckpt, steps=200)
    random_init = linear_probe(tmp_path / "probe_rand", kind, None, steps=200)
    acc_pre, acc_rand = pretrained["metrics_final"]["val/acc1"], random_init["metrics_final"]["val/acc1"]
    print(f"DINO {kind}: linear probe {acc_pre:.4f} pretrained vs {acc_rand:.4f} random init; k-NN "
          f"{pretrained['evaluation']['knn_acc_before_training']:.4f} vs "
          f"{random_init['evaluation']['knn_acc_before_training']:.4f}")
    assert acc_pre > acc_rand + 0.03
