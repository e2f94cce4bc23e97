"""Central pretraining of the SSSD-MIDT denoiser on a public corpus: the base federations start from.

One step = a batch of ``batch_size`` records drawn uniformly with replacement (``torch.randint`` on a seeded
generator), the SSSD-MIDT loss (``sssd.losses.diffusion_loss``, condition dropout on), global-norm gradient
clipping, AdamW. Learning rate: linear warm-up over ``warmup_steps`` to ``lr``, then cosine decay to
``min_lr_ratio · lr`` at the last step. EMA of the weights after every step,
``ema ← d·ema + (1 − d)·θ`` with ``d = min(ema_decay, (1 + s) / (10 + s))`` (s = steps done; the warm-up of
diffusers' EMAModel), started from the initial weights.

Precision: ``auto`` = bf16 autocast on CPUs with native bf16 (the S4 FFTs stay float32, see sssd.s4), fp16
autocast + GradScaler on CUDA, fp32 elsewhere. Everything random comes from generators seeded by ``seed``, and
the training state (weights, EMA, optimizer, step, generator states, loss history) is checkpointed atomically
every ``save_every`` steps to ``<stem>.train-state``: ``resume=True`` continues from it and ends with the same
weights as an uninterrupted run. With ``minutes`` instead of ``steps``, the step count is fixed once from the
speed of the first steps (and stored, so a resumed run keeps it).

Outputs next to ``OUT``: the base itself (``OUT``: model config, weights, EMA weights; what ``init:`` loads),
``<stem>.card.json`` / ``<stem>.card.md`` (the model card) and ``<stem>.loss.png`` / ``<stem>.loss.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.plots import plot_ecg_grid
from evaluation.realism import realism_metrics
from fedecg.device import choose_device, torch_threads
from fedecg.errors import FedECGError
from fedecg.io import append_jsonl, atomic_save, atomic_write_json, atomic_write_text
from pretraining.corpus import folder_corpus, synthetic_corpus
from ptbxl.constants import HELDOUT_FOLDS
from ptbxl.demographics import normalisation_constants
from ptbxl.labels import LabelVocab
from ptbxl.signals import derive_12_leads
from sssd.checkpoint import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.losses import diffusion_loss
from sssd.model import SSSDDenoiser
from sssd.pretrained import load_base
from sssd.sampling import resolve_precision, sample

log = logging.getLogger(__name__)

STATE_FORMAT = "fedecg-pretrain-state/1"
CARD_FORMAT = "fedecg-model-card/1"


@dataclass(frozen=True)
class PretrainSettings:
    out: str
    dataset: str = "demo"  # "demo" = the built-in synthetic corpus; or a PTB-XL-layout folder
    preset: str = "small"
    model_overrides: dict = field(default_factory=dict)
    corpus_records: int = 16_000  # synthetic corpus size
    corpus_seed: int = 20_261_202  # pretraining.corpus.PRETRAIN_CORPUS_SEED
    steps: int = 0  # > 0: exactly this many steps
    minutes: float = 0.0  # > 0 (and steps 0): as many steps as fit in this wall time
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0 = leave as is)
    save_every: int = 200
    log_every: int = 50
    eval_samples: int = 32  # ECGs sampled from the EMA weights for the card's realism metrics (0 = none)
    sampler_steps: int = 50  # DDIM steps for those samples
    sampler_eta: float = 1.0  # DDIM eta for those samples (1 = stochastic)
    resume: bool = False
    progress: bool = True
    init: str = ""  # start from this checkpoint's (EMA) weights instead of a fresh initialisation

    def validate(self) -> PretrainSettings:
        checks = [
            (self.steps > 0 or self.minutes > 0, "give --steps N or --minutes M"),
            (self.steps >= 0 and self.minutes >= 0, "--steps and --minutes must be >= 0"),
            (self.batch_size >= 1, "--batch must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (0.0 <= self.ema_decay < 1.0, "--ema-decay must be in [0, 1)"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.save_every >= 1, "save_every must be >= 1"),
            (self.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
            (self.corpus_records >= 1, "--records must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise FedECGError(f"pretrain: {msg}")
        if self.dataset != "demo" and not Path(self.dataset).is_dir():
            raise FedECGError(f"pretrain: dataset folder not found: {self.dataset} (or use 'demo')")
        return self


def lr_at(step: int, total: int, s: PretrainSettings) -> float:
    """Learning rate for step index ``step`` (0-based) of ``total``: linear warm-up, then cosine decay."""
    if s.warmup_steps > 0 and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(total - s.warmup_steps, 1)
    progress = min(max(step - s.warmup_steps, 0) / span, 1.0)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_decay_at(steps_done: int, decay: float) -> float:
    """The EMA decay after ``steps_done`` optimizer steps (diffusers' warm-up: (1 + s) / (10 + s))."""
    return min(decay, (1.0 + steps_done) / (10.0 + steps_done))


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """``ema ← decay·ema + (1 − decay)·params`` in place."""
    torch._foreach_mul_(ema, decay)
    torch._foreach_add_(ema, params, alpha=1.0 - decay)


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".train-state")


def card_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    return out.with_name(out.stem + ".card.json"), out.with_name(out.stem + ".card.md")


def _precision(requested: str, device: torch.device) -> str:
    if device.type == "cuda":
        return "fp16" if requested == "auto" else requested
    return resolve_precision(requested, device)


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_corpus(s: PretrainSettings):
    if s.dataset == "demo":
        return synthetic_corpus(s.corpus_records, s.corpus_seed, progress=s.progress and sys.stderr.isatty())
    return folder_corpus(s.dataset)


def pretrain(s: PretrainSettings) -> dict:
    """Run (or resume) pretraining; returns the model card (also written next to ``s.out``)."""
    s.validate()
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = choose_device(s.device)
    precision = _precision(s.precision, device)
    try:
        model_cfg = model_preset(s.preset, **s.model_overrides)
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"pretrain: model config: {exc}") from exc

    with torch_threads(s.threads or None):
        arrays, corpus = load_corpus(s)
        n = len(arrays)
        x_all = torch.from_numpy(np.ascontiguousarray(arrays.x, dtype=np.float32))
        lab_all = torch.from_numpy(np.ascontiguousarray(arrays.labels, dtype=np.float32))
        demo_all = torch.from_numpy(np.ascontiguousarray(arrays.demo, dtype=np.float32))
        mask_all = torch.from_numpy(np.ascontiguousarray(arrays.demo_mask, dtype=np.float32))

        base, init_info = None, None
        if s.init and not s.resume:
            base = load_base(s.init, model_config=model_cfg)  # checks the weights; global RNG untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            model = build_model(model_cfg.replace(init_seed=s.seed), None if base is None else base.state)
        if base is not None:
            init_info = {"path": str(base.path), "sha256": base.sha256, "weights": base.weights,
                         "steps": (base.card.get("training") or {}).get("steps")}
            log.info("pretrain: starting from %s (%s weights)", base.path, base.weights)
        model.to(device).train()
        params = [p for p in model.parameters()]
        ema = [p.detach().clone() for p in params]
        schedule = Schedule.from_config(model_cfg, device=device)
        optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        data_gen = torch.Generator().manual_seed(s.seed * 1_000_003 + 1)
        loss_gen = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + 2)
        step, total, history, elapsed = 0, s.steps, [], 0.0
        running = []  # (loss, eps_mse, mel) of the steps since the last history row

        sp = state_path(out)
        if s.resume:
            if not sp.is_file():
                raise FedECGError(f"pretrain --resume: no training state at {sp}")
            st = _load_state(sp)
            if st["model_config"] != model_cfg.to_dict():
                raise FedECGError(f"pretrain --resume: {sp} was trained with another model config")
            model.load_state_dict(st["state_dict"])
            for e, v in zip(ema, st["ema"]):
                e.copy_(v)
            optimizer.load_state_dict(st["optimizer"])
            data_gen.set_state(st["data_gen"])
            loss_gen.set_state(st["loss_gen"])
            step, total, history, elapsed = int(st["step"]), int(st["total"]), list(st["history"]), st["elapsed"]
            running = [tuple(r) for r in st.get("running", [])]  # the partial log window (when log_every
            # does not divide save_every), so the resumed loss history equals the uninterrupted one
            log.info("resuming pretraining at step %d of %d", step, total)
        elif sp.exists():
            log.info("starting over: %s exists (pass --resume to continue it)", sp)

        bar = _progress_bar(s.progress, total or None, step)
        t_start = time.perf_counter() - elapsed
        while total == 0 or step < total:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, max(total, s.warmup_steps + 1), s)
            idx = torch.randint(0, n, (s.batch_size,), generator=data_gen)
            x, lab, dem, msk = (t[idx].to(device) for t in (x_all, lab_all, demo_all, mask_all))
            optimizer.zero_grad(set_to_none=True)
            with _autocast(precision, device):
                loss, parts = diffusion_loss(model, schedule, x, lab, dem, msk, model_cfg.loss, generator=loss_gen)
            if not torch.isfinite(loss):
                raise FedECGError(f"pretrain: loss became {loss.item()} at step {step + 1}; lower --lr")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if s.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                optimizer.step()
            step += 1
            ema_update(ema, [p.detach() for p in params], ema_decay_at(step, s.ema_decay))
            running.append((float(loss.detach()), parts["eps_mse"], parts.get("mel", 0.0)))
            if bar is not None:
                bar.update(1)
            if total == 0 and step == min(20, max(5, s.save_every)):
                rate = (time.perf_counter() - t_start) / step
                total = max(step + 1, int(s.minutes * 60.0 / rate))
                log.info("pretrain: %.2f s/step -> %d steps in %.1f min", rate, total, s.minutes)
                if bar is not None:
                    bar.total = total
                    bar.refresh()
            if step % s.log_every == 0 or step == total:
                arr = np.asarray(running)
                row = {"step": step, "loss": float(arr[:, 0].mean()), "eps_mse": float(arr[:, 1].mean()),
                       "mel": float(arr[:, 2].mean()), "lr": optimizer.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - t_start}
                history.append(row)
                running = []
                log.info("pretrain step %d/%d: loss %.4f (eps %.4f, mel %.4f), lr %.2e, %.0f s", step, total,
                         row["loss"], row["eps_mse"], row["mel"], row["lr"], row["seconds"])
            if step % s.save_every == 0 or step == total:
                elapsed = time.perf_counter() - t_start
                _save_state(sp, model, ema, optimizer, data_gen, loss_gen, step, total, history, elapsed,
                            model_cfg, s, running)
                _save_base(out, model, ema, model_cfg, step, s, corpus)
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t_start
        card = _model_card(out, s, model_cfg, corpus, step, wall, history, precision, device, n)
        if s.init:
            card["training"]["initialised_from"] = init_info or {"path": s.init}
        if s.eval_samples > 0:
            card["realism"] = _realism(out, s, device)
        _write_card(out, card)
        _plot_loss(out, history)
    return card


# ---- files ------------------------------------------------------------------------------------------------


def _save_state(path, model, ema, optimizer, data_gen, loss_gen, step, total, history, elapsed, model_cfg, s,
                running=()):
    payload = {"format": STATE_FORMAT, "step": step, "total": total, "elapsed": elapsed,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "ema": [e.detach().cpu() for e in ema], "optimizer": optimizer.state_dict(),
               "data_gen": data_gen.get_state(), "loss_gen": loss_gen.get_state().cpu(),
               "history": history, "running": [list(r) for r in running], "model_config": model_cfg.to_dict(),
               "settings": {k: v for k, v in dataclasses.asdict(s).items() if k != "resume"}}
    atomic_save(path, lambda fh: torch.save(payload, fh))


def _load_state(path: Path) -> dict:
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FedECGError(f"pretrain --resume: {path} cannot be read ({type(exc).__name__})") from exc
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise FedECGError(f"pretrain --resume: {path} is not a pretraining state ({STATE_FORMAT})")
    return st


def _save_base(out: Path, model, ema, model_cfg, step: int, s: PretrainSettings, corpus) -> None:
    names = [k for k, _ in model.named_parameters()]
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ema_state = dict(state)
    ema_state.update({k: e.detach().cpu().clone() for k, e in zip(names, ema)})
    save_checkpoint(out, {"round": 0, "pretrain_step": step, "model_config": model_cfg.to_dict(),
                          "state_dict": state, "ema_state_dict": ema_state,
                          "label_codes": list(LabelVocab.default().codes),
                          "demographics": normalisation_constants(), "corpus": corpus.to_dict(),
                          "pretrain_settings": {k: v for k, v in dataclasses.asdict(s).items()
                                                if k not in ("resume", "progress")}})


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": sys.version.split()[0]}


def _model_card(out, s, model_cfg, corpus, step, wall, history, precision, device, n) -> dict:
    n_params = sum(int(np.prod(v)) for v in _param_shapes(model_cfg))
    return {
        "format": CARD_FORMAT, "name": out.stem, "weights": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": corpus.to_dict(),
        "training": {"steps": step, "batch_size": s.batch_size, "lr": s.lr, "warmup_steps": s.warmup_steps,
                     "schedule": f"linear warm-up, cosine to {s.min_lr_ratio} x lr", "ema_decay": s.ema_decay,
                     "weight_decay": s.weight_decay, "grad_clip": s.grad_clip, "seed": s.seed,
                     "precision": precision, "device": str(device), "records_seen": step * s.batch_size,
                     "epochs": step * s.batch_size / max(n, 1), "wall_seconds": round(wall, 1),
                     "final_loss": history[-1] if history else None},
        "machine": _machine(),
        "model": {"preset": s.preset, "overrides": dict(s.model_overrides), "parameters": n_params,
                  "config": model_cfg.to_dict()},
        "command": _command(s),
        "intended_use": "initial weights of federated / private fine-tuning (scenario key `init`); "
                        "its samples are synthetic and carry no patient information",
    }


def _param_shapes(model_cfg):
    with torch.random.fork_rng(devices=[]):
        return [tuple(p.shape) for p in SSSDDenoiser(model_cfg).parameters()]


def _command(s: PretrainSettings) -> str:
    """The `fedecg pretrain` command line that reproduces these settings (every option that changes the weights
    or the card; settings the CLI does not expose, e.g. weight_decay, are in the card's training block)."""
    def num(v) -> str:
        return repr(float(v)) if isinstance(v, float) else str(v)

    q = shlex.quote
    parts = [f"fedecg pretrain --dataset {q(s.dataset)} --preset {q(s.preset)} --out {q(str(s.out))}"]
    parts.append(f"--steps {s.steps}" if s.steps else f"--minutes {num(s.minutes)}")
    parts.append(f"--batch {s.batch_size} --lr {num(s.lr)} --warmup {s.warmup_steps} "
                 f"--ema-decay {num(s.ema_decay)} --seed {s.seed} --precision {q(s.precision)}")
    if s.dataset == "demo":
        parts.append(f"--records {s.corpus_records}")
    parts += [f"--set {q(f'{k}={json.dumps(v)}')}" for k, v in sorted(s.model_overrides.items())]
    if s.device != "auto":
        parts.append(f"--device {q(s.device)}")
    if s.init:
        parts.append(f"--init {q(s.init)}")
    parts.append(f"--eval-samples {s.eval_samples} --sampler-steps {s.sampler_steps} "
                 f"--sampler-eta {num(s.sampler_eta)}")
    return " ".join(parts)


def _realism(out: Path, s: PretrainSettings, device) -> dict:
    """Sample ``eval_samples`` ECGs from the EMA weights, conditioned like a held-out reference set, and
    compare them with it (evaluation.realism)."""
    if s.dataset == "demo":
        ref, _ = synthetic_corpus(max(s.eval_samples, 128), s.corpus_seed + 1)
        ref_name = f"synthetic, seed {s.corpus_seed + 1} (disjoint from the corpus)"
    else:
        ref, _ = folder_corpus(s.dataset, folds=HELDOUT_FOLDS)
        ref_name = f"folds 9-10 of {s.dataset}"
    model, cfg = model_from_checkpoint(load_checkpoint(out), device, ema=True)
    k = min(s.eval_samples, len(ref))
    cond = slice(0, k)
    t0 = time.perf_counter()
    syn = sample(model, Schedule.from_config(cfg, device), torch.from_numpy(np.asarray(ref.labels[cond])),
                 torch.from_numpy(np.asarray(ref.demo[cond])), torch.from_numpy(np.asarray(ref.demo_mask[cond])),
                 sampler="ddim", steps=s.sampler_steps, eta=s.sampler_eta,
                 generator=torch.Generator().manual_seed(s.seed))
    seconds = time.perf_counter() - t0
    real12 = np.asarray(derive_12_leads(np.asarray(ref.x)), dtype=np.float64)
    metrics = realism_metrics(real12, syn.float().cpu().numpy().astype(np.float64))
    np.savez_compressed(out.with_name(out.stem + ".samples.npz"), signals=syn.float().cpu().numpy())
    _plot_samples(out, syn.float().cpu().numpy())
    return {"reference": ref_name, "n_synthetic": k, "sampler": f"ddim-{s.sampler_steps} eta {s.sampler_eta:g}",
            "sampling_seconds": round(seconds, 1), "metrics": metrics}


def reevaluate(s: PretrainSettings) -> dict:
    """Recompute the realism block of an existing base's model card (other sampler settings or more samples)
    without training; the rest of the card is kept."""
    out = Path(s.out)
    jpath, _ = card_paths(out)
    if not out.is_file() or not jpath.is_file():
        raise FedECGError(f"pretrain --evaluate-only: need {out} and its card {jpath}")
    card = json.loads(jpath.read_text(encoding="utf-8"))
    with torch_threads(s.threads or None):
        card["realism"] = _realism(out, s, choose_device(s.device))
    _write_card(out, card)
    return card


def _write_card(out: Path, card: dict) -> None:
    jpath, mpath = card_paths(out)
    atomic_write_json(jpath, card)
    t = card["training"]
    lines = [f"# Model card: {card['name']}", "",
             f"SSSD-MIDT denoiser, preset `{card['model']['preset']}` ({card['model']['parameters']:,} "
             "parameters), pretrained centrally; the starting point of federated, private fine-tuning.", "",
             "## Data", "", f"- {card['data']['description']}", f"- licence: {card['data']['licence']}", "",
             "## Training", "",
             f"- {t['steps']} steps, batch {t['batch_size']} ({t['epochs']:.1f} epochs), lr {t['lr']:g} "
             f"({t['schedule']}), EMA {t['ema_decay']}, seed {t['seed']}, {t['precision']} on {t['device']}",
             f"- wall time {t['wall_seconds'] / 60:.1f} min on {card['machine']['cpu']} "
             f"({card['machine']['cpu_count']} cores, {card['machine']['torch_threads']} torch threads)",
             f"- command: `{card['command']}`", ""]
    if t.get("final_loss"):
        lines.insert(-1, f"- final loss {t['final_loss']['loss']:.4f} (eps-MSE {t['final_loss']['eps_mse']:.4f})")
    if "realism" in card:
        r = card["realism"]
        lines += ["## Realism of its samples (EMA weights)", "",
                  f"{r['n_synthetic']} ECGs, {r['sampler']}, against {r['reference']}:", "", "| metric | value |",
                  "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in r["metrics"].items() if isinstance(v, (int, float))]
        lines.append("")
    lines += ["## Intended use", "", card["intended_use"], ""]
    atomic_write_text(mpath, "\n".join(lines))


def _plot_loss(out: Path, history: list[dict]) -> None:
    jl = out.with_name(out.stem + ".loss.jsonl")
    if jl.exists():
        jl.unlink()
    for row in history:
        append_jsonl(jl, row)
    if not history:
        return
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [r["loss"] for r in history], label="loss")
    ax.plot(steps, [r["eps_mse"] for r in history], label="eps-MSE")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("pretraining loss (mean over log interval)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + ".loss.png"), dpi=100)
    plt.close(fig)


def _plot_samples(out: Path, signals: np.ndarray) -> None:
    plot_ecg_grid(signals[:8], out.with_name(out.stem + ".samples.png"))


def _progress_bar(show: bool, total: int | None, start: int):
    if not show or not sys.stderr.isatty():
        return None
    return tqdm(total=total, initial=start, desc="pretraining", unit="step")


def card_summary(card: dict) -> str:
    return json.dumps({"steps": card["training"]["steps"], "wall_seconds": card["training"]["wall_seconds"],
                       "realism": card.get("realism", {}).get("metrics")}, indent=1)
