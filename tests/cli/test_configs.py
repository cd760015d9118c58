"""Every shipped run config parses and trains one step (on tiny inputs where the config is large)."""

import glob
import os

import pytest
import yaml

from dyt_bench.cli import main
from dyt_bench.results import read_result

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    if os.sep + "grids" + os.sep not in p
)
# ImageNet and billion-parameter LLaMA configs need data and a cluster: they are parsed, not run.
PARSE_ONLY = [p for p in ALL_CONFIGS if os.sep + "imagenet" + os.sep in p or os.path.basename(p).startswith("llama_")
              or os.path.basename(p).startswith("imagenet_")]
RUN_CONFIGS = [p for p in ALL_CONFIGS if p not in PARSE_ONLY]
# Configs that read files or are large are shrunk for a CPU smoke run on synthetic data of the same shape.
ON_SYNTHETIC = ["--data.source", "synthetic", "--data.root", "null", "--data.batch_size", "4",
                "--data.synthetic_samples", "8", "--data.num_workers", "0", "--trainer.precision", "32"]
SHRINK = {"synthetic_vit_s.yaml": ["--model.img_size", "32", "--data.img_size", "32", "--data.batch_size", "4",
                                   "--data.synthetic_samples", "8", "--model.model_kwargs", '{"depth": 1}'],
          # the fine-tuning examples read a local weights file: the same configs without it (tests/models/
          # test_pretrained.py loads a locally saved model through this path)
          "finetune_pretrained_vit_dyt_tiny.yaml": [
              "--model.model_kwargs", '{"pretrained": false, "patch_size": 2, "embed_dim": 64, "depth": 1, '
              '"num_heads": 2, "global_pool": "avg", "class_token": false}'],
          "finetune_pretrained_vit_dyt.yaml": ON_SYNTHETIC + [
              "--model.img_size", "32", "--data.img_size", "32", "--model.model_kwargs",
              '{"pretrained": false, "depth": 1}']}


LANGUAGE_SMALL = ["--data.max_files", "4", "--data.seq_len", "32", "--model.max_seq_len", "32",
                  "--data.batch_size", "2", "--model.hidden_size", "32", "--model.num_layers", "1",
                  "--model.num_heads", "2", "--trainer.precision", "32"]


DIFFUSION_SMALL = ["--model.depth", "1", "--model.hidden_size", "32", "--model.num_heads", "2",
                   "--model.sampling.steps", "2", "--model.sampling.batch_size", "4", "--model.fid.num_samples", "4",
                   "--model.fid.feature_extractor", "random_cnn", "--model.grid.num_images", "4",
                   "--data.batch_size", "4", "--data.eval_batch_size", "4", "--model.ema", "null"]


# speech configs for GPUs and LibriSpeech: the tiny model on a few synthetic utterances, one CPU process
SPEECH_SMALL = ["--model.size", "tiny", "--model.mask_time_length", "5", "--data.source", "synthetic",
                "--data.synthetic_samples", "8", "--data.synthetic_val_samples", "2", "--data.synthetic_min_seconds",
                "0.75", "--data.synthetic_max_seconds", "1.0", "--data.max_sample_size", "16000",
                "--data.min_sample_size", "8000", "--data.max_batch_seconds", "4", "--data.num_workers", "0",
                "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1",
                "--trainer.strategy", "auto", "--trainer.precision", "32"]


DNA_PRETRAIN_SMALL = ["--data.source", "synthetic", "--data.fasta", "null", "--data.val_chromosomes", "null",
                      "--data.seq_len", "31", "--data.batch_size", "2", "--data.num_workers", "0",
                      "--data.synthetic_length", "4000", "--model.d_model", "16", "--model.l_max", "64",
                      "--trainer.precision", "32", "--trainer.accumulate_grad_batches", "1",
                      "--trainer.callbacks", "[]"]  # no checkpoint where a fine-tuning config would pick it up


def _dna_shrink(config: str) -> list[str]:
    with open(config, encoding="utf-8") as f:
        model = yaml.safe_load(f)["model"]
    if model["class_path"].endswith("DNAPretraining"):
        return DNA_PRETRAIN_SMALL
    classes = str(model["init_args"].get("num_classes", 2))
    return ["--data.source", "synthetic", "--data.synthetic_classes", classes, "--data.synthetic_train_per_class", "8",
            "--data.synthetic_test_per_class", "4", "--data.synthetic_length", "[20, 30]", "--data.max_length", "30",
            "--data.batch_size", "4", "--data.num_workers", "0", "--model.init_from", "null", "--model.d_model", "16",
            "--model.l_max", "64", "--trainer.precision", "32"]


# the supplied text's Appendix A.3 recipes of the self-supervised ImageNet configs: (task, base lr, weight decay)
SSL_RECIPES = {"imagenet_mae_vitb16_pretrain.yaml": ("MAEPretraining", 1.5e-4, 0.05),
               "imagenet_dino_vitb16_pretrain.yaml": ("DINOPretraining", 7.5e-4, 0.04),
               "imagenet_dino_vitb16_linear_probe.yaml": ("PretrainedViTEvaluation", 1e-3, 0.0)}


def _ssl_shrink(config: str) -> list[str]:
    """Self-supervised configs: no pretraining checkpoint to start from, CIFAR replaced by synthetic images."""
    with open(config, encoding="utf-8") as f:
        init = yaml.safe_load(f)["model"]["init_args"]
    args = ["--model.init_from", "null"] if init.get("init_from") else []
    return args + (ON_SYNTHETIC if "cifar" in os.path.basename(config) else [])


def _shrink(config: str) -> list[str]:
    if os.sep + "ssl" + os.sep in config:
        return _ssl_shrink(config)
    if os.sep + "dna" + os.sep in config:
        return _dna_shrink(config)
    if os.sep + "speech" + os.sep in config and os.path.basename(config) != "tiny.yaml":
        return SPEECH_SMALL
    if os.sep + "diffusion" + os.sep in config and os.path.basename(config) != "tiny.yaml":
        return DIFFUSION_SMALL + (ON_SYNTHETIC if "cifar" in os.path.basename(config) else [])
    if os.sep + "cifar" + os.sep in config:
        return ON_SYNTHETIC
    if os.sep + "language" + os.sep in config:
        return LANGUAGE_SMALL
    return SHRINK.get(os.path.basename(config), [])


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_runs_one_step(config, tmp_path):
    main(["fit", "--config", config, "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
          *_shrink(config)])
    (path,) = glob.glob(os.path.join(tmp_path, "**", "result.json"), recursive=True)
    assert read_result(path).status == "completed"


@pytest.mark.parametrize("config", PARSE_ONLY, ids=lambda p: os.path.relpath(p, ROOT))
def test_cluster_config_parses(config, capsys):
    assert main(["fit", "--config", config, "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    if os.path.basename(config).startswith("llama_"):
        strategy = printed["trainer"]["strategy"]  # FSDP wrapping one decoder layer per unit
        assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
        assert strategy["init_args"]["auto_wrap_policy"] == ["transformers.models.llama.modeling_llama.LlamaDecoderLayer"]
        assert printed["trainer"]["precision"] == "bf16-mixed"
        assert model["norm"]["kind"] in ("rmsnorm", "dyt") and model["vocab_size"] == 32000
        return
    if os.sep + "ssl" + os.sep in config:  # MAE / DINO at the paper's scale: the task, its recipe, LN or DyT
        assert printed["model"]["class_path"].endswith("." + SSL_RECIPES.get(os.path.basename(config), ("",))[0]) or \
            os.path.basename(config) not in SSL_RECIPES
        assert model["norm"]["kind"] in ("layernorm", "dyt") and printed["data"]["init_args"]["source"] == "imagefolder"
        if os.path.basename(config) in SSL_RECIPES:
            _, lr, wd = SSL_RECIPES[os.path.basename(config)]
            assert (model["optim"]["lr"], model["optim"]["weight_decay"]) == (lr, wd)
        return
    if os.sep + "diffusion" + os.sep in config:  # DiT's recipe: constant 1e-4, no weight decay, no warmup; FID-50K
        assert model["norm"]["kind"] == "layernorm" and model["vae"] and model["fid"]["test_num_samples"] == 50000
        assert (model["optim"]["lr"], model["optim"]["weight_decay"], model["optim"]["warmup_steps"],
                model["optim"]["schedule"]) == (1e-4, 0.0, 0, "constant")
        assert model["sampling"]["steps"] == 250 and model["sampling"]["method"] == "ddpm"
        return
    assert model["norm"]["kind"] in ("layernorm", "batchnorm")  # the baseline; DyT is one override
    assert model["optim"]["lr"] == 0.004 and model["optim"]["lr_base_batch"] == 4096
    assert printed["data"]["init_args"]["source"] == "imagefolder"


def test_there_are_configs():
    assert len(RUN_CONFIGS) >= 10 and len(PARSE_ONLY) == 8 + 4 + 4 + 4  # image, language, diffusion, ssl


def _init_args(path: str) -> tuple[dict, dict, dict]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return config.get("trainer", {}), config["model"]["init_args"], config.get("data", {}).get("init_args", {})


def test_configs_follow_the_supplied_text():
    """The recipes of the supplied text (Appendix A.2 / A.3, §4.2, Table 8) where it differs from arXiv v1."""
    from dyt_bench.norms import NormSpec

    # §4.2: "setting it to 1 works well in most cases" (LLMs excepted): the default, and no config overrides it
    assert NormSpec("dyt").resolved_alpha_init == 1.0 and NormSpec("tanh").resolved_alpha_init == 1.0
    assert "alpha_init" not in _init_args("configs/quickstart.yaml")[1]["norm"]
    for kind in ("dyt", "layernorm"):  # HyenaDNA: batch 1024, sequence 600, lr 1e-3, weight decay 0.2
        trainer, model, data = _init_args(f"configs/dna/hg38_pretrain_{kind}.yaml")
        assert data["seq_len"] == 600 and data["batch_size"] * trainer["accumulate_grad_batches"] == 1024
        assert (model["optim"]["lr"], model["optim"]["weight_decay"]) == (1e-3, 0.2) and model["l_max"] >= 600
        assert "alpha_init" not in model["norm"]
    for path in glob.glob(os.path.join(ROOT, "configs", "dna", "genomic_benchmarks", "*.yaml")):
        _, model, data = _init_args(os.path.relpath(path, ROOT))
        assert model["l_max"] == _init_args("configs/dna/hg38_pretrain_dyt.yaml")[1]["l_max"]  # loads its weights
        assert data["max_length"] == 500
    for pos in ("prenorm", "postnorm"):  # wav2vec 2.0: lr 1e-3, weight decay 0.01, 200 epochs, 32,000 warm-up steps
        trainer, model, _ = _init_args(f"configs/speech/base_{pos}.yaml")
        optim = model["optim"]
        assert (optim["lr"], optim["weight_decay"], optim["warmup_steps"], trainer["max_epochs"]) == (1e-3, 0.01,
                                                                                                     32000, 200)
    for path in glob.glob(os.path.join(ROOT, "configs", "diffusion", "imagenet", "*.yaml")):  # DiT: 1400 epochs
        trainer, model, data = _init_args(os.path.relpath(path, ROOT))
        assert trainer["max_epochs"] == 1400 and "max_steps" not in trainer
        assert data["batch_size"] * trainer["devices"] == 256 and model["optim"]["weight_decay"] == 0.0
    with open(os.path.join(ROOT, "configs", "grids", "imagenet", "table8_squash.yaml"), encoding="utf-8") as f:
        base = yaml.safe_load(f)["base"]  # Table 8 is ViT-Tiny
    assert _init_args(os.path.normpath(os.path.join("configs/grids/imagenet", base)))[1]["model"] == \
        "vit_tiny_patch16_224"
