"""The typed run configuration: one frozen dataclass tree built once from a scenario YAML plus ``key=value``
overrides, saved into every run directory and checkpoint, and sent to clients as JSON inside the train config.

Override keys are dotted paths into the tree (``train.local_steps=5``, ``dp.enabled=true``,
``model.mel_lambda=0``) plus short aliases for the common ones (``rounds``, ``local_steps``, ``dp``,
``model`` (preset name), ``noise_multiplier``, ``strategy``, ``dataset``, ``seed``, ``ema_decay``); ``init`` is
a top-level key (``init=builtin:<name>``, ``init=path/to/base.pt``, ``init=none``). Where overrides travel as
one string (Flower's run config ``overrides="a=b;c=d"``), ``split_overrides`` / ``join_overrides`` convert.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fedecg.errors import FedECGError
from fedecg.specs import Trainable, parse_robust, parse_trainable  # noqa: F401 - the config's grammars
from ptbxl.partition import PartitionConfig  # the data layer's own partition settings
from sssd.config import ModelConfig, model_preset

ALIASES = {
    "rounds": "rounds",
    "local_steps": "train.local_steps",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "dp": "dp.enabled",
    "noise_multiplier": "dp.noise_multiplier",
    "target_epsilon": "dp.target_epsilon",
    "max_grad_norm": "dp.max_grad_norm",
    "strategy": "strategy.name",
    "dataset": "dataset",
    "seed": "seed",
    "model": "model.preset",
    "ema_decay": "strategy.ema_decay",
}


@dataclass(frozen=True)
class ModelSpec:
    """A model preset name plus per-field overrides, resolved once per object into an sssd ModelConfig
    (``ScenarioConfig.validate`` does it at load time, so a bad preset or override fails there)."""

    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # not to be mutated: the resolved config is cached

    @functools.cached_property
    def _resolved(self) -> ModelConfig:
        try:
            return model_preset(self.preset, **self.overrides)
        except (TypeError, ValueError, KeyError) as exc:
            raise FedECGError(f"model config: {exc}") from exc

    def resolve(self) -> ModelConfig:
        """The resolved model config: the same object on every call (FedECGError "model config: ..." if bad)."""
        return self._resolved


@dataclass(frozen=True)
class TrainConfig:
    """Local training at each site, per round."""

    local_steps: int = 10  # optimizer steps per round (Poisson batches under DP)
    batch_size: int = 8  # the logical (expected, under DP) batch of one optimizer step
    physical_batch_size: int = 0  # DP: Opacus' BatchMemoryManager splits a logical batch into these (0 = no split)
    precision: str = "auto"  # auto: bf16 autocast on CPUs with native bf16 (fp16 AMP on CUDA, non-DP) | fp32 | bf16
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # non-private runs; DP runs clip per sample with dp.max_grad_norm
    amp: bool = True  # CUDA: fp16 autocast + GradScaler (non-DP only); ignored on CPU
    device: str = "auto"
    threads: int = 0  # torch threads per client (0 = leave as is)
    eval_batches: int = 2  # batches of the site's validation split scored in evaluate
    min_records: int = 1  # a site with fewer valid training records (bad ones are skipped) refuses the round
    trainable: str = "all"  # all | conditioning | last-blocks:N | lora:R (sssd.peft; the reply carries only these)


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD at each site (Opacus), per patient (default) or per record."""

    enabled: bool = False
    unit: str = "patient"  # patient: Poisson-sample patients, one random record each per step | record
    noise_multiplier: float = 1.0  # used when target_epsilon is 0
    target_epsilon: float = 0.0  # > 0: choose sigma so the whole run spends exactly this at delta
    delta: float = 0.0  # 0: delta = 1 / n_site_train
    max_grad_norm: float = 1.0
    accountant: str = "rdp"  # rdp | prv
    budget_epsilon: float = 0.0  # a site refuses to train once its epsilon would exceed this (0: target or none)
    # K (timestep, noise) draws per example, loss averaged per example before per-sample clipping (DPDM);
    # without DP plain variance reduction. Costs K x the compute of one draw.
    noise_multiplicity: int = 1


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation (Flower strategies) and reply validation."""

    name: str = "fedavg"  # fedavg | fedprox | fedadam | fedyogi
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    # separate: an evaluate message per round after aggregation. with-train: one message per round, each site
    # first evaluates the global model it receives (the previous round's) and then trains; only the final model
    # gets its own evaluate messages (halves the ClientApp process starts of a deployed round; server.loop)
    evaluate: str = "separate"
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    min_replies: int = 1  # a round with fewer accepted replies keeps the previous model
    proximal_mu: float = 0.01  # fedprox
    eta: float = 1e-2  # fedadam / fedyogi server learning rate
    eta_l: float = 1e-2
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    max_update_norm: float = 1e3  # replies whose update ||w_site - w_global|| exceeds this are rejected
    relative_norm_factor: float = 10.0  # >= 3 replies: reject updates > this x the round's median norm (0 = off)
    max_examples: float = 1e6  # cap on a site's num-examples (simulation: its manifest train count; server.validation)
    robust: str = "none"  # none | median | trimmed-mean:BETA | norm-bound:C (server.robust)
    round_timeout_s: float = 3600.0
    client_dp: bool = False  # Flower's DifferentialPrivacyServerSideFixedClipping (client-level DP)
    client_dp_noise: float = 1.0
    client_dp_clip: float = 10.0
    # server-side EMA of the global model: ema = d*ema + (1-d)*global, d = min(ema_decay, (1+r)/(10+r)); 0 = off
    ema_decay: float = 0.9


@dataclass(frozen=True)
class SimulationConfig:
    """Simulation Engine resources."""

    client_cpus: int = 1  # Ray resources per client: on 2 cores, two clients at a time
    client_gpus: float = 0.0
    ray_address: str = ""  # join this Ray cluster (ray start --head address, "auto", ray://host:10001); "" = local


@dataclass(frozen=True)
class OutputConfig:
    synthesize: int = 8  # ECGs synthesized at the end of a run (0 = none)
    sampler: str = "ddim"
    sampler_steps: int = 20
    sampler_eta: float = 1.0  # DDIM: 1 = stochastic (DDPM-like, fewer rhythm errors), 0 = deterministic
    keep_checkpoints: int = 0  # 0 = keep every round's checkpoint
    fidelity_reference: str = "train"  # realism of the ECGs vs: train (the sites' records) | heldout (folds 9-10)


@dataclass(frozen=True)
class DemoDataConfig:
    """Size of the built-in demo dataset (``dataset: demo``), generated on first use with the run's seed."""

    records: int = 480
    sites: int = 5


@dataclass(frozen=True)
class ScenarioConfig:
    """One federated run."""

    name: str = "run"
    dataset: str = "demo"  # a PTB-XL-layout folder, or "demo" (the built-in demo data, generated on demand)
    init: str = "none"  # starting weights: none (seeded init) | builtin:<name> | path of a checkpoint file
    rounds: int = 3
    seed: int = 0
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    demo_data: DemoDataConfig = field(default_factory=DemoDataConfig)
    # simulation only: the privacy policy each simulated site holds in its own node config (privacy.policy keys,
    # e.g. {dp_required: false, max_epsilon_run: 4, sites: {"2": {min_noise_multiplier: 1.0}}}; {} = the
    # policy defaults). Never sent to sites: a site reads its policy from its node config, not from the server.
    site_policy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> ScenarioConfig:
        return _link_seeds(_build(cls, data, source), data)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> ScenarioConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FedECGError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)

    def validate(self, check_files: bool = True) -> ScenarioConfig:
        """Check every field; FedECGError names the problem. ``check_files=False`` skips what depends on this
        machine's files (whether the ``init`` base exists here): a resumed run continues from its checkpoint,
        and a site never needs the server's base file."""
        if self.site_policy:
            from privacy.policy import check_policy_spec

            try:
                check_policy_spec(self.site_policy)
            except FedECGError as exc:
                raise FedECGError(f"scenario {self.name!r}: {exc}") from exc
        import math

        bad_floats = [f"{sec}.{f.name}" for sec in ("train", "dp", "strategy", "output")
                      for f in fields(getattr(self, sec)) if f.type in ("float", float)
                      and not math.isfinite(float(getattr(getattr(self, sec), f.name)))]
        if bad_floats:
            raise FedECGError(f"scenario {self.name!r}: {', '.join(bad_floats)} must be finite")
        checks = [
            (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.name) is not None,
             f"name must be 1-64 letters, digits, '.', '_' or '-' (no paths), got {self.name!r}"),
            (re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.train.device) is not None,
             f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.train.device!r}"),
            (0 < self.strategy.fraction_evaluate <= 1, "strategy.fraction_evaluate must be in (0, 1]"),
            (self.strategy.evaluate in ("separate", "with-train"),
             f"strategy.evaluate must be separate or with-train, not {self.strategy.evaluate!r}"),
            (self.rounds >= 1, "rounds must be >= 1"),
            (self.train.local_steps >= 1, "train.local_steps must be >= 1"),
            (self.train.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.train.lr > 0, "train.lr must be > 0"),
            (self.train.physical_batch_size >= 0, "train.physical_batch_size must be >= 0"),
            (self.train.min_records >= 1, "train.min_records must be >= 1"),
            (self.train.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16"),
            (_trainable_ok(self.train.trainable),
             f"train.trainable must be all, conditioning, last-blocks:N or lora:R, got {self.train.trainable!r}"),
            (1 <= self.dp.noise_multiplicity <= 256, "dp.noise_multiplicity must be in 1..256"),
            (self.output.sampler in ("ddim", "ddpm", "dpmpp2m", "dpmpp2m-sde"),
             f"output.sampler must be ddim, ddpm, dpmpp2m or dpmpp2m-sde, got {self.output.sampler!r}"),
            (self.output.sampler_steps >= (2 if self.output.sampler.startswith("dpmpp2m") else 1),
             f"output.sampler_steps must be >= 1 (>= 2 for dpmpp2m*), got {self.output.sampler_steps}"),
            (re.fullmatch(r"|auto|(ray://)?[A-Za-z0-9._\[\]:-]+:\d{1,5}", self.simulation.ray_address) is not None,
             f"simulation.ray_address must be '', auto, host:port or ray://host:port, "
             f"got {self.simulation.ray_address!r}"),
            (self.demo_data.records >= self.demo_data.sites >= 1, "demo_data needs records >= sites >= 1"),
            (self.output.fidelity_reference in ("train", "heldout"), "output.fidelity_reference: train or heldout"),
            (self.strategy.name in ("fedavg", "fedprox", "fedadam", "fedyogi"),
             "strategy.name must be fedavg, fedprox, fedadam or fedyogi"),
            (self.dp.accountant in ("rdp", "prv"), "dp.accountant must be rdp or prv"),
            (self.dp.unit in ("patient", "record"), "dp.unit must be patient or record"),
            (self.dp.noise_multiplier > 0 or self.dp.target_epsilon > 0 or not self.dp.enabled,
             "dp.noise_multiplier must be > 0 (or set dp.target_epsilon)"),
            (self.dp.max_grad_norm > 0, "dp.max_grad_norm must be > 0"),
            (0 <= self.dp.delta < 1, "dp.delta must be in [0, 1)"),
            (0 < self.strategy.fraction_train <= 1, "strategy.fraction_train must be in (0, 1]"),
            (self.strategy.min_replies >= 1, "strategy.min_replies must be >= 1"),
            (0.0 <= self.strategy.ema_decay < 1.0,
             f"strategy.ema_decay must be in [0, 1) (0 = no EMA), got {self.strategy.ema_decay}"),
            (bool(self.init.strip()), "init must be none, builtin:<name> or the path of a checkpoint file"),
        ]
        for ok, msg in checks:
            if not ok:
                raise FedECGError(f"scenario {self.name!r}: {msg}")
        self.model.resolve()
        self._validate_robust()
        if check_files and self.init != "none":
            from sssd.pretrained import resolve_init

            try:
                resolve_init(self.init)
            except FedECGError as exc:
                raise FedECGError(f"scenario {self.name!r}: {exc}") from exc
        return self

    def _validate_robust(self) -> None:
        sc = self.strategy
        try:
            rule = parse_robust(sc.robust)
        except FedECGError as exc:
            raise FedECGError(f"scenario {self.name!r}: {exc}") from exc
        if rule.combines and sc.client_dp:
            raise FedECGError(f"scenario {self.name!r}: strategy.robust={sc.robust} combines the sites' updates "
                              "before Flower's client-level DP could clip each one; use none or norm-bound:C "
                              "with strategy.client_dp")
        if not sc.relative_norm_factor >= 0 or not sc.max_examples > 0:
            raise FedECGError(f"scenario {self.name!r}: strategy.relative_norm_factor must be >= 0 and "
                              "strategy.max_examples > 0")


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> ScenarioConfig:
    """Read a scenario YAML, apply ``key=value`` overrides, validate. Relative dataset and init paths are
    resolved against the YAML's folder (then the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise FedECGError(f"scenario file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise FedECGError(f"scenario {path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise FedECGError(f"scenario {path}: top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    ds = data.get("dataset")
    if isinstance(ds, str) and ds not in ("demo",) and not Path(ds).is_absolute():
        candidate = (path.parent / ds).resolve()
        data["dataset"] = str(candidate if candidate.exists() else Path(ds).resolve())
    init = data.get("init")
    if init is None and "init" in data:
        data["init"] = "none"  # `init: null` in YAML
    elif isinstance(init, str) and init.strip() not in ("none", "") and not init.startswith("builtin:"):
        p = Path(init.strip()).expanduser()
        if not p.is_absolute():
            candidate = (path.parent / p).resolve()
            p = candidate if candidate.exists() else p.resolve()
        data["init"] = str(p)
    data.setdefault("name", path.stem)
    return ScenarioConfig.from_dict(data, str(path)).validate()


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings (YAML-typed values) to a nested dict, returning a new dict."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise FedECGError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2 and parts[1] != "preset":
            parts = ["model", "overrides", parts[1]]
        node = data
        if parts[0] == "model" and isinstance(node.get("model"), str):
            node["model"] = {"preset": node["model"]}
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise FedECGError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def split_overrides(text: str) -> list[str]:
    """The ``;``-separated form of ``key=value`` overrides (Flower's run config ``overrides="a=b;c=d"``) as the
    list ``apply_overrides`` takes: items stripped, blank ones dropped; an item without ``=`` is refused."""
    items = [item.strip() for item in str(text or "").split(";")]
    items = [item for item in items if item]
    bad = [item for item in items if "=" not in item]
    if bad:
        raise FedECGError(f"overrides {text!r}: {', '.join(repr(b) for b in bad)} not key=value "
                          "(expected key=value items separated by ';')")
    return items


def join_overrides(overrides: list[str]) -> str:
    """The inverse of ``split_overrides``: ``key=value`` items as one ``;``-separated string. An item with a
    ``;`` (it would split into two) or without ``=`` is refused."""
    items = [item for item in (str(o).strip() for o in overrides) if item]
    bad = [item for item in items if "=" not in item or ";" in item]
    if bad:
        raise FedECGError(f"overrides {', '.join(repr(b) for b in bad)}: each must be key=value without ';'")
    return ";".join(items)


def _link_seeds(cfg: ScenarioConfig, data: Any) -> ScenarioConfig:
    """The root ``seed`` reaches the initial weights and the partition (fedecg.seeds) unless the scenario sets
    ``model.init_seed`` / ``partition.seed`` itself."""
    from fedecg.seeds import seed31

    model = cfg.model
    if "init_seed" not in model.overrides:
        model = dataclasses.replace(model, overrides={**model.overrides, "init_seed": seed31(cfg.seed, "model-init")})
    partition = cfg.partition
    raw = data.get("partition") if isinstance(data, dict) else None
    if not (isinstance(raw, dict) and "seed" in raw):
        partition = dataclasses.replace(partition, seed=seed31(cfg.seed, "partition"))
    return dataclasses.replace(cfg, model=model, partition=partition)


def _build(cls, data: Any, where: str):
    if cls is ModelSpec and isinstance(data, str):
        return ModelSpec(preset=data)
    if not isinstance(data, dict):
        raise FedECGError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FedECGError(f"{where}: unknown key(s) {', '.join(unknown)} in {cls.__name__} "
                          f"(known: {', '.join(known)})")
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        sub = _SECTIONS.get(name) if cls is ScenarioConfig else None
        if sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(f, value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if typ == "bool":
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ == "float":
            return float(value)
        if typ == "str":
            return str(value)
        if typ == "dict":
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"{where}: expected {typ}, got {value!r}") from exc
    return value


_SECTIONS = {
    "partition": PartitionConfig,
    "model": ModelSpec,
    "train": TrainConfig,
    "dp": DPConfig,
    "strategy": StrategyConfig,
    "simulation": SimulationConfig,
    "output": OutputConfig,
    "demo_data": DemoDataConfig,
}



def _trainable_ok(spec: str) -> bool:
    try:
        parse_trainable(spec)
    except ValueError:
        return False
    return True
