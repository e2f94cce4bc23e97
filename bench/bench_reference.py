"""Side by side in one run: the reference SSSD-ECG (AI4HealthUOL/SSSD-ECG, as it ships) against our denoiser.

    python bench/bench_reference.py --reference-dir DIR [--blocks 4 --channels 256 --batch 8 --threads 2
        --repeats 3] [--sample --sample-steps 3 --preset paper] [--json]

DIR is a checkout of the reference, kept OUTSIDE this repository (its code is never copied here):
``git clone https://github.com/AI4HealthUOL/SSSD-ECG DIR`` (or ``git -C MIRROR worktree add DIR`` /
``git -C MIRROR archive HEAD | tar -x -C DIR`` from a local mirror); ``$SSSD_REF_DIR`` is the default.
The reference's S4 layer needs ``einops`` and ``opt_einsum`` (``pip install einops``, or put them on
``PYTHONPATH``); ``pytorch_lightning`` is imported only for a logging decorator and is stubbed when absent.

Every configuration runs in a fresh subprocess (own peak RSS, ``OMP_WAIT_POLICY=PASSIVE`` unless set,
``OMP_NUM_THREADS`` and torch intra-op threads = ``--threads``):
* the reference's training step: ``models.SSSD_ECG.SSSD_ECG`` built from its ``config_SSSD_ECG.json``
  ``wavenet_config`` with ``num_res_layers``/``res_channels``/``skip_channels`` = ``--blocks``/``--channels``,
  a step = ``optimizer.zero_grad()``, ``utils.util.training_loss_label(net, nn.MSELoss(), (x, label), dh)``,
  ``backward()``, ``Adam.step()`` exactly as its ``train.py`` (batch ``--batch``, 8 leads x 1000 samples, 71
  multi-hot labels). Its S4 layer runs as it ships; without pykeops or its CUDA Cauchy extension (the case on a
  CPU) it uses its own pure-torch fallback ``cauchy_slow``, which the result names (``reference_cauchy``). Its
  hard-coded ``.cuda()`` calls on tensors are made no-ops (the one change needed to run it on a CPU);
* ours, through ``bench.bench_model.run_isolated`` (the numbers ``fedecg bench model`` gives), fp32 and bf16;
* with ``--sample``: the reference's DDPM-200 per ECG: its own ``utils.util.sampling_label`` run for
  ``--sample-steps`` S reverse steps (the first S entries of its schedule; the cost of a step does not depend
  on t), divided by S and multiplied by T = 200, divided by the batch (the method of bench_model's
  ``--sample-steps``: time per denoiser call x calls), against our fast sampler at its default steps, DDIM-50
  and DDPM-200 from one ``bench_model`` run at the same config.

Reported: wall seconds (median of ``--repeats`` after ``--warmup`` for training) and process CPU seconds per
thread (much less inflated than the wall time by other load on a shared CPU), peak RSS, and the ratios
reference / ours. A table, and with ``--json`` one JSON object on the last line. Configuration differences
between the two models (read from the reference's config json and train.py) are listed under ``notes``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench`, `sssd` importable
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_model import _model_config, run_isolated  # noqa: E402
from sssd.s4 import S4Layer  # noqa: E402

CLONE_HINT = "git clone https://github.com/AI4HealthUOL/SSSD-ECG"
# files of the reference this bench imports or reads, relative to its src/sssd
REFERENCE_FILES = ("models/SSSD_ECG.py", "models/S4Model.py", "utils/util.py", "config/config_SSSD_ECG.json")
REFERENCE_DEPS = ("einops", "opt_einsum", "scipy")
OURS_LR = 2e-4  # bench.bench_model._setup's Adam learning rate


class BenchError(Exception):
    """A problem with the arguments or the reference checkout: printed as one line, no traceback."""


# ---- arguments and the reference checkout ----


def reference_src(reference_dir: str | os.PathLike | None) -> Path:
    """The reference's ``src/sssd`` folder inside ``reference_dir`` (a checkout of AI4HealthUOL/SSSD-ECG, or its
    ``src/sssd`` itself); BenchError (one line, naming the problem) when it is missing, wrong or inside this
    repository."""
    if reference_dir is None or str(reference_dir).strip() == "":
        raise BenchError(f"--reference-dir is required (or $SSSD_REF_DIR): a checkout of the reference ({CLONE_HINT})")
    root = Path(reference_dir).expanduser()
    if not root.exists():
        raise BenchError(f"--reference-dir {root} does not exist ({CLONE_HINT} {root})")
    if not root.is_dir():
        raise BenchError(f"--reference-dir {root} is not a directory")
    root = root.resolve()
    if root == REPO_ROOT or REPO_ROOT in root.parents:
        raise BenchError(f"--reference-dir {root} is inside this repository; check the reference out elsewhere "
                         "(its code must not be committed here)")
    src = root / "src" / "sssd" if (root / "src" / "sssd").is_dir() else root
    missing = [f for f in REFERENCE_FILES if not (src / f).is_file()]
    if missing:
        raise BenchError(f"--reference-dir {root} is not a checkout of AI4HealthUOL/SSSD-ECG: no "
                         f"{', '.join('src/sssd/' + f for f in missing)} ({CLONE_HINT})")
    return src


def check_reference_deps() -> list[str]:
    """BenchError naming the missing packages the reference's S4 layer imports; the notes on what is stubbed."""
    missing = [m for m in REFERENCE_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"the reference's S4 layer needs {', '.join(missing)}, which this Python "
                         f"({sys.executable}) lacks: pip install {' '.join(missing)} (or put it on PYTHONPATH)")
    if importlib.util.find_spec("pytorch_lightning") is None:
        return ["pytorch_lightning is absent: its rank_zero_only (a logging decorator in S4Model.py) is stubbed"]
    return []


def validate_args(args: argparse.Namespace) -> None:
    for name in ("blocks", "channels", "batch", "threads", "repeats"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
    if args.sample and args.sample_steps < 1:
        raise BenchError(f"--sample-steps must be >= 1 (denoiser calls timed and extrapolated), got "
                         f"{args.sample_steps}")
    if args.skip_train and not args.sample:
        raise BenchError("--skip-train without --sample leaves nothing to time")


def read_reference_config(src: Path) -> dict[str, Any]:
    """The reference's ``config/config_SSSD_ECG.json``. It ships with trailing commas (not strict JSON), so
    those are removed before parsing; ``lenient`` says whether that was needed."""
    text = (src / "config" / "config_SSSD_ECG.json").read_text()
    try:
        cfg, lenient = json.loads(text), False
    except json.JSONDecodeError:
        try:
            cfg, lenient = json.loads(re.sub(r",(\s*[}\]])", r"\1", text)), True
        except json.JSONDecodeError as exc:
            raise BenchError(f"{src / 'config' / 'config_SSSD_ECG.json'} is not readable JSON: {exc}") from None
    for key in ("wavenet_config", "diffusion_config"):
        if not isinstance(cfg.get(key), dict):
            raise BenchError(f"{src / 'config' / 'config_SSSD_ECG.json'} has no {key}")
    cfg["_lenient"] = lenient
    return cfg


def reference_wavenet(ref_cfg: dict[str, Any], blocks: int | None, channels: int | None) -> dict[str, Any]:
    """The reference's model kwargs: its paper config, with layers/channels replaced when given."""
    wn = dict(ref_cfg["wavenet_config"])
    if blocks is not None:
        wn["num_res_layers"] = blocks
    if channels is not None:
        wn["res_channels"] = wn["skip_channels"] = channels
    return wn


# reference key -> ModelConfig field
_WAVENET_PAIRS = (
    ("in_channels", "in_channels"),
    ("out_channels", "out_channels"),
    ("num_res_layers", "num_blocks"),
    ("res_channels", "res_channels"),
    ("skip_channels", "skip_channels"),
    ("diffusion_step_embed_dim_in", "step_embed_dim_in"),
    ("diffusion_step_embed_dim_mid", "step_embed_dim_mid"),
    ("diffusion_step_embed_dim_out", "step_embed_dim_out"),
    ("s4_lmax", "seq_len"),
    ("s4_d_state", "s4_state"),
    ("s4_dropout", "s4_dropout"),
    ("s4_bidirectional", "s4_bidirectional"),
    ("s4_layernorm", "s4_layernorm"),
    ("label_embed_dim", "label_embed_dim"),
    ("label_embed_classes", "num_labels"),
)
_DIFFUSION_PAIRS = (("T", "T"), ("beta_0", "beta_start"), ("beta_T", "beta_end"))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (bool, int, float)) and isinstance(b, (bool, int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b


def config_mismatches(wavenet: dict[str, Any], diffusion: dict[str, Any], ours: Any, label: str) -> list[str]:
    """One line per hyper-parameter where the reference's model kwargs / diffusion config differ from our
    ModelConfig ``ours`` (``label`` names the configuration); keys the reference lacks are listed too."""
    out = []
    for table, pairs, section in ((wavenet, _WAVENET_PAIRS, "wavenet_config"),
                                  (diffusion, _DIFFUSION_PAIRS, "diffusion_config")):
        for ref_key, our_key in pairs:
            if ref_key not in table:
                out.append(f"{label}: reference {section} has no {ref_key} (ours {our_key}={getattr(ours, our_key)})")
            elif not _same(table[ref_key], getattr(ours, our_key)):
                out.append(f"{label}: {section}.{ref_key}={table[ref_key]!r} vs ours {our_key}="
                           f"{getattr(ours, our_key)!r}")
    return out


def train_script_notes(src: Path, ref_cfg: dict[str, Any]) -> list[str]:
    """What the reference's train.py does differently from its own config (read from its text)."""
    notes = []
    train_py = src / "train.py"
    if not train_py.is_file():
        return ["reference train.py not found: its loop is reproduced from utils.util.training_loss_label"]
    text = train_py.read_text()
    m = re.search(r"DataLoader\([^)]*batch_size\s*=\s*(\d+)", text)
    cfg_batch = ref_cfg.get("train_config", {}).get("batch_size")
    if m and cfg_batch is not None and int(m.group(1)) != int(cfg_batch):
        notes.append(f"reference train.py hard-codes DataLoader batch_size={m.group(1)} while its config says "
                     f"batch_size={cfg_batch}; both sides are timed here at --batch")
    lr = ref_cfg.get("train_config", {}).get("learning_rate")
    if lr is not None and not _same(lr, OURS_LR):
        notes.append(f"reference learning_rate={lr} vs ours {OURS_LR} (no effect on the step time)")
    return notes


STRUCTURAL_NOTES = (
    "S4: the reference's DPLR (NPLR) S4 with a Cauchy kernel vs our diagonal S4D (docs/model.md); its kernel is "
    "recomputed in every forward, as it ships",
    "ours has no weight normalisation, no residual 1x1 conv in the last block, a label Linear with bias, and adds "
    "demographics conditioning (MLP of 4 fields + mask) and classifier-free-guidance dropout",
    "loss: the reference's plain eps-MSE; ours adds the MIDT mel term (mel_lambda 0.1) -- more work on our side",
    "the reference's tensor .cuda() calls are no-ops here (CPU); its sampling is fp32 (it has no bf16 path)",
)


def s4_output_notes(reference_outputs: list[dict | None]) -> list[str]:
    """How the S4 layers' output maps differ: the reference's (as built in its subprocess) against ours."""
    ref = next((r for r in reference_outputs if r), None)
    if ref is None:
        return []
    probe = S4Layer(8, 4).output_linear
    ours_factor = probe.out_features // probe.in_features  # 2: Linear(H, 2H) then GLU in forward
    ref_factor = ref["out"] // ref["in"]
    if ref_factor == ours_factor and (ref["activation"] == ["GLU"]) == (ours_factor == 2):
        return []
    ref_desc = f"Linear(H, {ref_factor}H)" + (f" + {'+'.join(ref['activation'])}" if ref["activation"] else
                                               ", no activation (its S4Layer passes no postact)")
    ours_desc = f"Linear(H, {ours_factor}H)" + (" + GLU" if ours_factor == 2 else "")
    return [f"S4 output map: the reference {ref_desc} vs ours {ours_desc} (H = {ref['in']}): ours does "
            f"{ours_factor / ref_factor:g}x the reference's FLOPs and parameters in that linear, in every S4 layer"]


# ---- ratios and the table ----


def ratio(reference: float | None, ours: float | None) -> float | None:
    """reference / ours, rounded to 2 decimals; None when either is missing or ours is not positive."""
    if reference is None or ours is None or ours <= 0:
        return None
    return round(reference / ours, 2)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def format_table(rows: list[tuple[str, float | None, float | None, float | None, float | None]],
                 title: str = "") -> str:
    """Rows of (what, reference wall s, reference CPU s/thread, ours wall s, ours CPU s/thread) with the
    ratios reference / ours, as aligned text."""
    head = ("", "ref wall s", "ref cpu/thr", "ours wall s", "ours cpu/thr", "ref/ours wall", "ref/ours cpu")
    body = [(name, _num(rw), _num(rc), _num(ow), _num(oc), _x(ratio(rw, ow)), _x(ratio(rc, oc)))
            for name, rw, rc, ow, oc in rows]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = [title] if title else []
    for r in (head, *body):
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


# ---- the reference, in this (child) process ----


def _cpu_shims() -> list[str]:
    """What the reference needs to import and run on a CPU: tensor ``.cuda()`` as a no-op, and a stand-in for
    pytorch_lightning's ``rank_zero_only`` when that package is absent."""
    notes = []
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    if importlib.util.find_spec("pytorch_lightning") is None:
        pl = types.ModuleType("pytorch_lightning")
        utilities = types.ModuleType("pytorch_lightning.utilities")
        utilities.rank_zero_only = lambda fn: fn  # type: ignore[attr-defined]
        pl.utilities = utilities  # type: ignore[attr-defined]
        sys.modules.setdefault("pytorch_lightning", pl)
        sys.modules.setdefault("pytorch_lightning.utilities", utilities)
        notes.append("pytorch_lightning stubbed")
    return notes


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def measure_reference(src: str, wavenet: dict[str, Any], diffusion: dict[str, Any], batch: int = 8,
                      threads: int = 2, warmup: int = 1, repeats: int = 3, lr: float = OURS_LR,
                      sample_steps: int = 0, skip_train: bool = False, seed: int = 0) -> dict[str, Any]:
    """Time the reference's training step (and with ``sample_steps`` its DDPM sampling) in this process."""
    torch.set_num_threads(threads)
    shims = _cpu_shims()
    sys.path.insert(0, src)
    # the reference's modules, from its checkout outside this repository (they need einops / opt_einsum)
    with contextlib.redirect_stdout(sys.stderr):  # the reference prints; stdout carries our JSON only
        util = importlib.import_module("utils.util")
        s4 = importlib.import_module("models.S4Model")
        sssd_ecg = importlib.import_module("models.SSSD_ECG")
    for name, mod in (("utils.util", util), ("models.SSSD_ECG", sssd_ecg)):
        if not str(Path(mod.__file__).resolve()).startswith(str(Path(src).resolve())):
            raise BenchError(f"{name} was imported from {mod.__file__}, not from the reference at {src}")
    cauchy = ("CUDA extension" if s4.has_cauchy_extension else "pykeops" if s4.has_pykeops
              else "cauchy_slow (its pure-torch fallback)")
    torch.manual_seed(seed)
    net = sssd_ecg.SSSD_ECG(**wavenet)
    dh = util.calc_diffusion_hyperparams(**diffusion)
    g = torch.Generator().manual_seed(seed)
    length, n_labels = int(wavenet["s4_lmax"]), int(wavenet["label_embed_classes"])
    audio = 0.3 * torch.randn(batch, int(wavenet["in_channels"]), length, generator=g)
    label = (torch.rand(batch, n_labels, generator=g) < 0.05).float()
    result: dict[str, Any] = {
        "params": sum(p.numel() for p in net.parameters()),
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "cauchy": cauchy, "shims": shims, "batch": batch, "threads": threads,
        "num_res_layers": wavenet["num_res_layers"], "res_channels": wavenet["res_channels"],
        "s4_d_state": wavenet["s4_d_state"],
    }
    s4_mod = next((m for m in net.modules() if isinstance(m, s4.S4)), None)
    if s4_mod is not None:  # LinearActivation: a (transposed) linear, or Sequential(linear, activation)
        ol = s4_mod.output_linear
        seq = list(ol) if isinstance(ol, nn.Sequential) else [ol]
        w = seq[0].weight  # (d_output, d_input)
        acts = [type(m).__name__ for m in seq[1:] if not isinstance(m, nn.Identity)]
        result["s4_output_linear"] = {"in": int(w.shape[1]), "out": int(w.shape[0]), "activation": acts}
    walls, cpus = [], []
    if not skip_train:
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.MSELoss()
        for i in range(warmup + repeats):  # the body of train.py's loop
            w0, c0 = time.perf_counter(), time.process_time()
            optimizer.zero_grad()
            loss = util.training_loss_label(net, loss_fn, (audio, label), dh)
            loss.backward()
            optimizer.step()
            if i >= warmup:
                walls.append(time.perf_counter() - w0)
                cpus.append((time.process_time() - c0) / threads)
        del optimizer
        result["loss"] = float(loss.detach())
    result["train_step_s"] = round(statistics.median(walls), 4) if walls else None
    result["train_step_cpu_s"] = round(statistics.median(cpus), 4) if cpus else None
    result["train_peak_mem_mb"] = round(_peak_mb(), 1)
    if sample_steps > 0:
        net.eval()
        steps = min(sample_steps, dh["T"])
        short = {"T": steps, **{k: v[:steps] for k, v in dh.items() if k != "T"}}
        w0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sys.stderr):
            util.sampling_label(net, (batch, int(wavenet["in_channels"]), length), short, cond=label)
        wall, cpu = time.perf_counter() - w0, (time.process_time() - c0) / threads
        result.update({
            "sample_steps_timed": steps,
            "ddpm_s_per_call": round(wall / steps, 4),
            "ddpm200_s_per_ecg": round(wall / steps * dh["T"] / batch, 4),
            "ddpm200_cpu_s_per_ecg": round(cpu / steps * dh["T"] / batch, 4),
            "T": dh["T"],
        })
    result["peak_mem_mb"] = round(_peak_mb(), 1)
    return result


def _child_env(threads: int) -> dict[str, str]:
    # as bench_model.run_isolated: passive OpenMP waiting unless the caller chose otherwise
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(threads)}


def run_reference_isolated(what: str, **kwargs: Any) -> dict[str, Any]:
    """``measure_reference(**kwargs)`` in a fresh Python process; ``what`` names it in errors."""
    cmd = [sys.executable, "-m", "bench.bench_reference", "--child-reference", json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(kwargs.get("threads", 2)),
                          cwd=REPO_ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"the reference's {what} failed in its subprocess (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_ours(what: str, **kwargs: Any) -> dict[str, Any]:
    try:
        return run_isolated(**kwargs)
    except RuntimeError as exc:
        sys.stderr.write(str(exc) + "\n")
        raise BenchError(f"our {what} failed in its subprocess (bench_model; its stderr above)") from None


# ---- the side-by-side run ----


def compare(args: argparse.Namespace, src: Path, dep_notes: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    ref_cfg = read_reference_config(src)
    notes = list(dep_notes)
    if ref_cfg["_lenient"]:
        notes.append("reference config_SSSD_ECG.json has trailing commas (not strict JSON); read leniently")
    notes += train_script_notes(src, ref_cfg)
    common = dict(batch=args.batch, threads=args.threads)
    out: dict[str, Any] = {
        "benchmark": "bench_reference", "reference_dir": str(src.parent.parent if src.name == "sssd" else src),
        "blocks": args.blocks, "channels": args.channels, "batch": args.batch, "threads": args.threads,
        "warmup": args.warmup, "repeats": args.repeats, "loadavg_start": load_start,
    }
    runs: dict[str, Any] = {}
    if not args.skip_train:
        wn = reference_wavenet(ref_cfg, args.blocks, args.channels)
        notes += config_mismatches(wn, ref_cfg["diffusion_config"], _model_config(None, args.blocks, args.channels,
                                                                                   None), "train config")
        lr = float(ref_cfg.get("train_config", {}).get("learning_rate", OURS_LR))
        runs["reference_train"] = run_reference_isolated(
            "training step", src=str(src), wavenet=wn, diffusion=ref_cfg["diffusion_config"], warmup=args.warmup,
            repeats=args.repeats, lr=lr, **common)
        for prec in ("fp32", "bf16"):
            runs[f"ours_train_{prec}"] = _run_ours(
                f"{prec} training step", blocks=args.blocks, channels=args.channels, warmup=args.warmup,
                repeats=args.repeats, precision=prec, **common)
        ref, f32, b16 = runs["reference_train"], runs["ours_train_fp32"], runs["ours_train_bf16"]
        out.update({
            "reference_train_step_s": ref["train_step_s"], "reference_train_step_cpu_s": ref["train_step_cpu_s"],
            "ours_train_step_s_fp32": f32["train_step_s"], "ours_train_step_cpu_s_fp32": f32["train_step_cpu_s"],
            "ours_train_step_s_bf16": b16["train_step_s"], "ours_train_step_cpu_s_bf16": b16["train_step_cpu_s"],
            "speedup_fp32": ratio(ref["train_step_s"], f32["train_step_s"]),
            "speedup_bf16": ratio(ref["train_step_s"], b16["train_step_s"]),
            "speedup_cpu_fp32": ratio(ref["train_step_cpu_s"], f32["train_step_cpu_s"]),
            "speedup_cpu_bf16": ratio(ref["train_step_cpu_s"], b16["train_step_cpu_s"]),
            "reference_train_peak_mem_mb": ref["train_peak_mem_mb"],
            "ours_train_peak_mem_mb_fp32": f32["train_peak_mem_mb"],
            "ours_train_peak_mem_mb_bf16": b16["train_peak_mem_mb"],
            "reference_train_params": ref["params"], "ours_train_params": f32["params"],
            "reference_cauchy": ref["cauchy"],
        })
    if args.sample:
        same = args.preset == "same"
        blocks, channels = (args.blocks, args.channels) if same else (None, None)
        wn = reference_wavenet(ref_cfg, blocks, channels)
        ours_cfg = _model_config(None if same else "paper", blocks, channels, None)
        label = f"sampling config ({'same as train' if same else 'paper'})"
        notes += config_mismatches(wn, ref_cfg["diffusion_config"], ours_cfg, label)
        runs["reference_sample"] = run_reference_isolated(
            "sampling", src=str(src), wavenet=wn, diffusion=ref_cfg["diffusion_config"], skip_train=True,
            sample_steps=args.sample_steps, **common)
        runs["ours_sample"] = _run_ours(
            "sampling", preset=None if same else "paper", blocks=blocks, channels=channels, sample=True,
            sample_steps=args.sample_steps, skip_train=True, sample_precision=args.sample_precision, **common)
        ref, ours = runs["reference_sample"], runs["ours_sample"]
        out.update({
            "sample_preset": args.preset, "sample_steps": args.sample_steps,
            "sample_blocks": wn["num_res_layers"], "sample_channels": wn["res_channels"],
            "reference_ddpm200_s_per_ecg": ref["ddpm200_s_per_ecg"],
            "reference_ddpm200_cpu_s_per_ecg": ref["ddpm200_cpu_s_per_ecg"],
            "reference_sample_peak_mem_mb": ref["peak_mem_mb"], "reference_sample_params": ref["params"],
            "ours_fast_s_per_ecg": ours["fast_s_per_ecg"], "ours_fast_cpu_s_per_ecg": ours["fast_cpu_s_per_ecg"],
            "ours_ddim50_s_per_ecg": ours["ddim50_s_per_ecg"],
            "ours_ddim50_cpu_s_per_ecg": ours["ddim50_cpu_s_per_ecg"],
            "ours_ddpm200_s_per_ecg": ours["ddpm200_s_per_ecg"],
            "ours_ddpm200_cpu_s_per_ecg": ours["ddpm200_cpu_s_per_ecg"],
            "ours_sample_peak_mem_mb": ours["peak_mem_mb"], "ours_sample_params": ours["params"],
            "fast_sampler": ours["fast_sampler"], "fast_steps": ours["fast_steps"],
            "sample_precision": ours["sample_precision"],
            "sampling_speedup": ratio(ref["ddpm200_s_per_ecg"], ours["fast_s_per_ecg"]),
            "sampling_speedup_cpu": ratio(ref["ddpm200_cpu_s_per_ecg"], ours["fast_cpu_s_per_ecg"]),
            "sampling_speedup_ddim50": ratio(ref["ddpm200_s_per_ecg"], ours["ddim50_s_per_ecg"]),
            "denoiser_call_speedup": ratio(ref["ddpm200_s_per_ecg"], ours["ddpm200_s_per_ecg"]),
            "reference_cauchy": ref["cauchy"],
        })
        if ours["sample_precision"] != "fp32":
            notes.append(f"sampling: ours in {ours['sample_precision']} (its default here), the reference in fp32")
    notes += s4_output_notes([r.get("s4_output_linear") for k, r in runs.items() if k.startswith("reference")])
    notes += list(STRUCTURAL_NOTES)
    out.update({"notes": notes, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
                "wall_s": round(time.perf_counter() - t0, 1), "runs": runs})
    return out


def report_table(r: dict[str, Any]) -> str:
    """The human-readable report of ``compare``'s result."""
    parts = []
    if "reference_train_step_s" in r:
        rows = [
            ("train step, ours fp32", r["reference_train_step_s"], r["reference_train_step_cpu_s"],
             r["ours_train_step_s_fp32"], r["ours_train_step_cpu_s_fp32"]),
            ("train step, ours bf16", r["reference_train_step_s"], r["reference_train_step_cpu_s"],
             r["ours_train_step_s_bf16"], r["ours_train_step_cpu_s_bf16"]),
        ]
        parts.append(format_table(rows, f"training step: {r['blocks']} blocks x {r['channels']} channels, batch "
                                        f"{r['batch']}, {r['threads']} threads, median of {r['repeats']} "
                                        f"(reference fp32, S4 Cauchy: {r['reference_cauchy']})"))
        parts.append(f"peak RSS MB: reference {r['reference_train_peak_mem_mb']}, ours fp32 "
                     f"{r['ours_train_peak_mem_mb_fp32']}, bf16 {r['ours_train_peak_mem_mb_bf16']}; params: "
                     f"reference {r['reference_train_params']:,}, ours {r['ours_train_params']:,}")
    if "reference_ddpm200_s_per_ecg" in r:
        ref_w, ref_c = r["reference_ddpm200_s_per_ecg"], r["reference_ddpm200_cpu_s_per_ecg"]
        rows = [
            (f"per ECG: ref DDPM-200 vs ours {r['fast_sampler']}-{r['fast_steps']}", ref_w, ref_c,
             r["ours_fast_s_per_ecg"], r["ours_fast_cpu_s_per_ecg"]),
            ("per ECG: ref DDPM-200 vs ours DDIM-50", ref_w, ref_c, r["ours_ddim50_s_per_ecg"],
             r["ours_ddim50_cpu_s_per_ecg"]),
            ("per ECG: ref DDPM-200 vs ours DDPM-200", ref_w, ref_c, r["ours_ddpm200_s_per_ecg"],
             r["ours_ddpm200_cpu_s_per_ecg"]),
        ]
        parts.append(format_table(rows, f"sampling: {r['sample_blocks']} blocks x {r['sample_channels']} "
                                        f"channels, batch {r['batch']}, {r['sample_steps']} denoiser calls timed "
                                        f"each side and extrapolated; ours {r['sample_precision']}"))
        parts.append(f"peak RSS MB: reference {r['reference_sample_peak_mem_mb']}, ours "
                     f"{r['ours_sample_peak_mem_mb']}; params: reference {r['reference_sample_params']:,}, ours "
                     f"{r['ours_sample_params']:,}")
    parts.append(f"load average {r['loadavg_start']} at start, {r['loadavg_end']} at end; run {r['wall_s']} s")
    parts.append("notes:\n" + "\n".join(f"  - {n}" for n in r["notes"]))
    return "\n\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", default=os.environ.get("SSSD_REF_DIR"),
                   help="a checkout of AI4HealthUOL/SSSD-ECG outside this repository (default $SSSD_REF_DIR)")
    p.add_argument("--blocks", type=int, default=4, help="training step: residual layers (default 4)")
    p.add_argument("--channels", type=int, default=256, help="training step: res/skip channels (default 256)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-train", action="store_true", help="only time sampling")
    p.add_argument("--sample", action="store_true", help="also time sampling per ECG")
    p.add_argument("--sample-steps", type=int, default=3, help="denoiser calls timed each side (default 3)")
    p.add_argument("--preset", choices=("paper", "same"), default="paper",
                   help="sampling config: paper (36 x 256, the reference's json) or same (--blocks x --channels)")
    p.add_argument("--sample-precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="our sampling precision (default auto, as sample()); the reference runs fp32")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--child-reference", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.child_reference:
            print(json.dumps(measure_reference(**json.loads(args.child_reference))), flush=True)
            return
        validate_args(args)
        src = reference_src(args.reference_dir)
        dep_notes = check_reference_deps()
        result = compare(args, src, dep_notes)
    except BenchError as exc:
        raise SystemExit(f"bench_reference: {exc}") from None
    print(report_table(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
