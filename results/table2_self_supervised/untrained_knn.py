"""k-NN accuracy (val/knn_acc, ×1) of the untrained teacher backbone of configs/ssl/digits64_dino_vits16.yaml, per norm
and seed: the step-0 reference of the table2_self_supervised cells. Run from the repository root:
    python results/table2_self_supervised/untrained_knn.py
"""
import torch
import torch.nn.functional as F

from dyt_bench.lightning_cli import build_from_config
from dyt_bench.tasks.ssl_eval import knn_accuracy

out = {}
for kind in ("layernorm", "dyt"):
    for seed in (0, 1, 2):
        task, dm = build_from_config("configs/ssl/digits64_dino_vits16.yaml",
                                     [f"--model.norm.kind={kind}", f"--seed_everything={seed}", "--data.num_workers=0"])
        dm.setup("fit")
        task.eval()
        feats = []
        for loader in dm.val_dataloader():
            f, y = [], []
            with torch.no_grad():
                for xb, yb in loader:
                    f.append(F.normalize(task.encoder_features(xb).float(), dim=-1))
                    y.append(yb)
            feats.append((torch.cat(f), torch.cat(y)))
        out[(kind, seed)] = knn_accuracy(*feats[0], *feats[1])
        print(kind, seed, round(out[(kind, seed)], 4), flush=True)
