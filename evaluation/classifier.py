"""A compact 1-D CNN for PTB-XL multi-label classification (default: the 5 diagnostic superclasses), used for
the downstream utility experiments and as the embedding network of the FID.

Input: model view ``(B, 8, L)`` mV (leads I, II, V1..V6). Four strided Conv1d–BatchNorm–ReLU blocks, global
average + max pooling, a linear projection to ``emb_dim`` (the FID embedding) and a linear multi-label head
trained with BCE-with-logits. Macro AUROC = mean over classes that have both labels in the evaluation set.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedecg.errors import FedECGError
from fedecg.io import atomic_save

log = logging.getLogger(__name__)
FORMAT = "fedecg-classifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    n_classes: int = 5
    in_leads: int = 8
    width: int = 32
    emb_dim: int = 64
    epochs: int = 15
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


class ECGClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        w = cfg.width
        chans = [cfg.in_leads, w, w, 2 * w, 2 * w]
        blocks = []
        for i, k in enumerate((7, 5, 5, 3)):
            blocks += [
                nn.Conv1d(chans[i], chans[i + 1], k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm1d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.project = nn.Sequential(nn.Linear(4 * w, cfg.emb_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(cfg.emb_dim, cfg.n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.project(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    cfg: ClassifierConfig,
    device: torch.device | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> ECGClassifier:
    """Train on ``x`` (N, 8, L) mV, ``y`` (N, K) multi-hot; with a validation set the epoch with the best
    validation macro AUROC (ties → lowest validation loss) is kept."""
    device = device or torch.device("cpu")
    if len(x) == 0 or len(x) != len(y) or y.shape[1] != cfg.n_classes:
        raise FedECGError(
            f"train_classifier: bad shapes x {np.shape(x)}, y {np.shape(y)} for {cfg.n_classes} classes"
        )
    # parameter init and dropout use torch's default generator: fork it so the caller's state is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _train(x, y, cfg, device, x_val, y_val)


def _train(x, y, cfg: ClassifierConfig, device: torch.device, x_val, y_val) -> ECGClassifier:
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ECGClassifier(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss()
    best = (-np.inf, None)
    steps_per_epoch = max(1, int(np.ceil(len(xt) / cfg.batch_size)))
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2 and len(xt) >= 2:
                continue  # BatchNorm needs two samples
            xb = _augment(xt[idx], gen).to(device)
            loss = loss_fn(model(xb), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if x_val is not None and y_val is not None and len(x_val):
            score = macro_auroc(y_val, predict_proba(model, x_val, device))
            score = -np.inf if not np.isfinite(score) else score
            if score > best[0] or best[1] is None:
                best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            log.debug("epoch %d: val macro AUROC %.3f", epoch, score)
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return model


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random amplitude scaling (0.9–1.1) per ECG: a light, label-preserving augmentation."""
    scale = 0.9 + 0.2 * torch.rand(x.shape[0], 1, 1, generator=gen)
    return x * scale


@torch.no_grad()
def predict_proba(
    model: ECGClassifier, x: np.ndarray, device: torch.device | None = None, batch_size: int = 256
) -> np.ndarray:
    """Sigmoid probabilities (N, K)."""
    return _batched(model, x, device, batch_size, lambda m, xb: torch.sigmoid(m(xb)))


@torch.no_grad()
def embed(
    model: ECGClassifier, x: np.ndarray, device: torch.device | None = None, batch_size: int = 256
) -> np.ndarray:
    """Embeddings (N, emb_dim) used by the FID."""
    return _batched(model, x, device, batch_size, lambda m, xb: m.embed(xb))


def _batched(model, x, device, batch_size, fn) -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    outs = [
        fn(model, torch.as_tensor(np.asarray(x[i : i + batch_size]), dtype=torch.float32).to(device)).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean AUROC over the classes with both positives and negatives in ``y``; NaN if none."""
    scores = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def bootstrap_auroc(y: np.ndarray, p: np.ndarray, n_boot: int = 200, seed: int = 0,
                    keep_samples: bool = False) -> dict:
    """Macro AUROC with a 95 % percentile bootstrap CI over test ECGs (resampled with replacement; the same
    ``seed`` gives the same resamples, so two models scored on one test set are compared pairwise)."""
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        v = macro_auroc(y[idx], p[idx])
        boots.append(v)
    point = macro_auroc(y, p)
    finite = [b for b in boots if np.isfinite(b)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if finite else (np.nan, np.nan)
    out = {"auroc": point, "ci_low": float(lo), "ci_high": float(hi), "n_boot": len(finite)}
    if keep_samples:
        out["boot"] = [float(b) for b in boots]  # NaN kept so positions stay paired across models
    return out


def save_classifier(
    path: str | Path, model: ECGClassifier, cfg: ClassifierConfig, classes: list[str]
) -> None:
    payload = {
        "format": FORMAT,
        "config": asdict(cfg),
        "classes": list(classes),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
    }
    atomic_save(path, lambda fh: torch.save(payload, fh))


def load_classifier(path: str | Path, device: torch.device | None = None) -> tuple[ECGClassifier, list[str]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise FedECGError(f"{path}: cannot load classifier checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FedECGError(f"{path}: not a {FORMAT} classifier checkpoint")
    cfg = ClassifierConfig(**payload["config"])
    model = ECGClassifier(cfg)
    model.load_state_dict(payload["state_dict"])
    model.to(device or torch.device("cpu")).eval()
    return model, list(payload["classes"])
