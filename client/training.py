"""Local training and validation at one site: plain functions, no Flower (the ClientApp only adapts them).

One round at a site = load the global weights into a fresh denoiser, run ``train.local_steps`` optimizer steps
of the conditional SSSD-MIDT loss (eps-MSE + lambda * Mel loss, see sssd.losses) with AdamW, then return the
plain denoiser's weights. Non-private: shuffled mini-batches, global-norm gradient clipping, fp16 autocast +
GradScaler on CUDA. Private (DP-SGD, Opacus): Poisson sampling with rate
q = privacy.accounting.poisson_rate(n_train, batch_size) (Opacus' 1 / number of batches), per-sample
clipping to ``dp.max_grad_norm`` and Gaussian noise ``sigma * max_grad_norm``; each drawn (logical) batch is one
accounted step (an empty Poisson batch still counts, conservatively). ``train.batch_size`` is the logical batch;
with ``train.physical_batch_size`` Opacus' BatchMemoryManager computes it in physical batches of that size
(memory bounded, accounting unchanged). Precision: see ``train_precision`` (bf16 autocast on CPUs with native bf16).

Randomness is explicit: every draw (batches, timesteps, diffusion noise, DP noise) comes from generators seeded
by ``(seed, round, site)``, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from fedecg.config import ScenarioConfig
from fedecg.errors import FedECGError
from fedecg.seeds import derive_seed
from fedecg.specs import parse_trainable
from ptbxl.dataset import ECGTorchDataset, PatientSampledDataset
from sssd import losses, sampling  # looked up at call time (tests stub diffusion_loss and cpu_has_native_bf16)
from sssd.checkpoint import build_model
from sssd.diffusion import Schedule
from sssd.dp import average_draws, repeat_draws
from sssd.model import unwrap
from sssd.peft import apply_trainable, count_trainable, reply_state

# opacus (~1 s, ~800 modules) is imported where used: only DP-SGD rounds need it, non-private rounds and
# validation (every evaluate message) do not.

log = logging.getLogger(__name__)


@dataclass
class LocalResult:
    state: dict[str, np.ndarray]
    metrics: dict[str, float]
    dp_entry: dict | None  # {"noise_multiplier", "sample_rate", "steps", "max_grad_norm"} when DP was used


def train_precision(cfg: ScenarioConfig, device: torch.device, private: bool) -> str:
    """``fp32`` | ``bf16`` | ``fp16`` for local training. ``auto``: bf16 autocast on CPUs with native bf16 (the S4
    FFTs stay float32), fp16 AMP + GradScaler on CUDA without DP (``train.amp``), else fp32. Under DP the
    clipping and the noise act on the per-sample gradients as computed, so the guarantee does not depend on it."""
    if device.type == "cuda":
        return "fp16" if cfg.train.amp and not private and cfg.train.precision == "auto" else "fp32"
    if cfg.train.precision == "auto":
        return "bf16" if sampling.cpu_has_native_bf16() else "fp32"
    return cfg.train.precision


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _physical_batches(loader, optimizer, cfg: ScenarioConfig, private: bool):
    """The loader itself, or under DP with ``train.physical_batch_size`` Opacus' BatchMemoryManager, which
    yields physical batches and makes the optimizer skip its step until a logical batch is complete."""
    phys = cfg.train.physical_batch_size
    if not private or phys <= 0 or phys >= cfg.train.batch_size:
        return contextlib.nullcontext(loader)
    from opacus.utils.batch_memory_manager import BatchMemoryManager  # heavy: see the note at the imports

    return BatchMemoryManager(data_loader=loader, max_physical_batch_size=phys, optimizer=optimizer)


def initial_weights_for_test(cfg: ScenarioConfig) -> dict[str, np.ndarray]:
    """Freshly initialised weights of the run's model (tests and benchmarks)."""
    return state_to_numpy(build_model(cfg.model.resolve(), None, torch.device("cpu")))


def state_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in unwrap(model).state_dict().items()}


def train_local(global_state: dict[str, np.ndarray], arrays, cfg: ScenarioConfig, *, server_round: int,
                site: str, device: torch.device, noise_multiplier: float | None = None,
                proximal_mu: float = 0.0, patient_ids: np.ndarray | None = None) -> LocalResult:
    """Train one round at a site. ``noise_multiplier`` given ⇔ DP-SGD (the caller chose sigma). With
    ``dp.unit: patient`` DP-SGD samples patients (``patient_ids`` per training record, required)."""
    model_cfg = cfg.model.resolve()
    seed = derive_seed(cfg.seed, server_round, site)
    data_gen = torch.Generator().manual_seed(seed)
    loss_gen = torch.Generator(device=device).manual_seed(seed + 1)
    spec = parse_trainable(cfg.train.trainable)
    model = apply_trainable(build_model(model_cfg, global_state, device), spec,
                            torch.Generator().manual_seed(seed + 4))
    model.train()
    schedule = Schedule.from_config(model_cfg, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    private = noise_multiplier is not None
    draws = cfg.dp.noise_multiplicity
    if private and cfg.dp.unit == "patient":
        if patient_ids is None:
            raise FedECGError(f"site {site}: dp.unit is patient but the site's ptbxl_database.csv has no "
                              "patient_id column (add it, or set dp.unit=record)")
        dataset = PatientSampledDataset(arrays, patient_ids, torch.Generator().manual_seed(seed + 3))
    else:
        dataset = ECGTorchDataset(arrays)
    n = len(dataset)
    batch = min(cfg.train.batch_size, n)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=data_gen, drop_last=False)
    if private:
        from opacus import PrivacyEngine  # heavy: see the note at the imports

        noise_gen = torch.Generator(device=device).manual_seed(seed + 2)
        with warnings.catch_warnings():  # we seed the noise generator on purpose (reproducible runs)
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=cfg.dp.accountant)
            model, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
                max_grad_norm=cfg.dp.max_grad_norm, poisson_sampling=True, noise_generator=noise_gen)
    anchor = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in params]
    precision = train_precision(cfg, device, private)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    sums = {"loss": 0.0, "eps": 0.0, "mel": 0.0}
    counted = 0  # physical batches with a loss
    steps = 0  # optimizer (logical) steps = accounted steps under DP
    t0 = time.perf_counter()
    with _physical_batches(loader, optimizer, cfg, private) as batches:
        while steps < cfg.train.local_steps:
            for x, labels, demo, demo_mask in batches:
                if steps >= cfg.train.local_steps:
                    break
                if x.shape[0] == 0:  # empty Poisson batch: nothing to learn, still an accounted step
                    steps += 1
                    continue
                x, labels, demo, demo_mask = (t.to(device) for t in (x, labels, demo, demo_mask))
                n_examples = x.shape[0]
                x, labels, demo, demo_mask = repeat_draws(draws, x, labels, demo, demo_mask)
                # per physical batch (Opacus keeps the clipped sum of a skipped step's batches itself)
                optimizer.zero_grad(set_to_none=True)
                with _autocast(precision, device):
                    loss, parts = losses.diffusion_loss(model, schedule, x, labels, demo, demo_mask, model_cfg.loss,
                                                        generator=loss_gen)
                    if anchor is not None:
                        prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                        loss = loss + 0.5 * proximal_mu * prox
                if not torch.isfinite(loss):
                    raise FedECGError(f"site {site}: training loss became {loss.item()} at round "
                                      f"{server_round}, step {steps + 1}; lower train.lr")
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    with warnings.catch_warnings():  # Opacus' hooks on a layer whose input needs no grad
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        loss.backward()
                    if private:  # per-example gradients of the K-averaged loss, in float32 (clipping must be exact)
                        average_draws(model, n_examples, draws)
                    elif cfg.train.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    optimizer.step()
                # Opacus (BatchMemoryManager) skips the step until the logical batch is complete
                stepped = not (private and getattr(optimizer, "_is_last_step_skipped", False))
                if stepped:
                    steps += 1
                sums["loss"] += float(loss.detach())
                sums["eps"] += parts["eps_mse"]
                sums["mel"] += parts.get("mel", 0.0)  # absent when model.mel_lambda = 0
                counted += 1
    seconds = time.perf_counter() - t0
    denom = max(counted, 1)
    metrics = {"train-loss": sums["loss"] / denom, "eps-loss": sums["eps"] / denom,
               "mel-loss": sums["mel"] / denom, "steps": float(steps), "train-seconds": seconds,
               "physical-batches": float(counted), "trained-parameters": float(count_trainable(model))}
    dp_entry = None
    if private:
        dp_entry = {"noise_multiplier": float(noise_multiplier), "sample_rate": float(loader.sample_rate),
                    "steps": steps, "max_grad_norm": cfg.dp.max_grad_norm}
    return LocalResult(state=reply_state(model, spec), metrics=metrics, dp_entry=dp_entry)


@torch.no_grad()
def validate_local(global_state: dict[str, np.ndarray], arrays, cfg: ScenarioConfig, *, site: str,
                   device: torch.device) -> dict[str, float]:
    """Mean diffusion loss of the global model on the site's validation records (fixed noise and timesteps)."""
    model_cfg = cfg.model.resolve()
    model = build_model(model_cfg, global_state, device).eval()
    schedule = Schedule.from_config(model_cfg, device=device)
    gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "validation", site))
    n = len(arrays.ecg_ids)
    bs = cfg.train.batch_size
    sums = {"loss": 0.0, "eps": 0.0, "mel": 0.0}
    total = 0
    for start in range(0, min(n, bs * cfg.train.eval_batches), bs):
        sl = slice(start, start + bs)
        x, labels, demo, demo_mask = (torch.tensor(np.asarray(a[sl]), device=device)
                                      for a in (arrays.x, arrays.labels, arrays.demo, arrays.demo_mask))
        loss, parts = losses.diffusion_loss(model, schedule, x, labels, demo, demo_mask, model_cfg.loss,
                                            generator=gen)
        k = x.shape[0]
        sums["loss"] += float(loss) * k
        sums["eps"] += parts["eps_mse"] * k
        sums["mel"] += parts.get("mel", 0.0) * k
        total += k
    total = max(total, 1)
    return {"val-loss": sums["loss"] / total, "val-eps-loss": sums["eps"] / total,
            "val-mel-loss": sums["mel"] / total, "num-examples": float(total)}
