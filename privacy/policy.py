"""A site's own privacy policy: what this hospital allows, whatever the server's run configuration asks.

The policy comes from the node's own configuration only, never from a server message:

- deployment: the SuperNode's ``--node-config``, either a policy file
  (``privacy-policy=/path/policy.yaml``, YAML or JSON with the keys below) and/or inline keys
  (``dp-required=true min-noise-multiplier=0.8 max-epsilon-run=4 max-epsilon-lifetime=8 delta=1e-5
  privacy-unit='patient' max-local-steps=50 min-batch=8 max-batch=256``); inline keys win over the file;
- simulation: the simulation harness builds each simulated node's node config from the scenario's
  ``site_policy`` section (``simulated_node_config``); the server never sends it.

Nothing set → the defaults below (DP-SGD required, per patient, δ 1e-5, ε ≤ 10 per run and ≤ 20 over the site's
lifetime, σ ≥ 0.5), which admit the demo scenario (patient-level DP, target ε 3.5 at δ 1e-5, batch 64).

``decide`` turns the server's request plus the site's ledger into either a refusal (a reason for the reply's
status/message and the local log) or what the site will do this round: its own σ (planned by the site when the
server asks for a target ε, never below ``min_noise_multiplier``), Poisson rate, δ and steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fedecg import protocol as P
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from privacy.accounting import ledger_epsilon, lifetime_epsilon, plan_site, poisson_rate
from privacy.ledger import LifetimeLedger

POLICY_FILE_KEY = P.NODE_PRIVACY_POLICY  # node config: path of the site's policy file
SIMULATED_NODE_CONFIG_ENV = "FEDECG_SIMULATED_NODE_CONFIG"  # Simulation Engine only: see write_simulated_node_configs

# node-config key → SitePolicy field (policy files accept either spelling, and the field names)
NODE_KEYS = {
    "dp-required": "dp_required",
    "min-noise-multiplier": "min_noise_multiplier",
    "max-epsilon-run": "max_epsilon_run",
    "max-epsilon-lifetime": "max_epsilon_lifetime",
    "delta": "delta",
    "privacy-unit": "unit",
    "max-local-steps": "max_local_steps",
    "min-batch": "min_batch",
    "max-batch": "max_batch",
}
_ALIASES = {**NODE_KEYS, "unit": "unit", "privacy_unit": "unit"}
FIELD_KEYS = {v: k for k, v in NODE_KEYS.items()}  # field → node-config key
UNITS = ("patient", "record")

# the server's own budget (dp.budget_epsilon / target) is met by planning within Opacus' 0.01 tolerance
SERVER_BUDGET_TOLERANCE = 0.011


@dataclass(frozen=True)
class SitePolicy:
    """What this site allows. ``source`` says where it was read from (logs, ``fedecg privacy policy``)."""

    dp_required: bool = True  # refuse a run without DP-SGD
    min_noise_multiplier: float = 0.5  # never train with σ below this (also when planning σ for a target ε)
    max_epsilon_run: float = 10.0  # ε one run may spend at this site (at the run's δ)
    max_epsilon_lifetime: float = 20.0  # ε over every run this site ever trained (at the site's δ, RDP)
    delta: float = 1e-5  # the site's δ: a server asking for a larger δ is refused; 0 in the server's config = this
    unit: str = "patient"  # privacy unit: patient | record; a server asking for the other one is refused
    max_local_steps: int = 200  # DP-SGD steps per round
    min_batch: int = 1  # allowed (logical, expected) batch size range
    max_batch: int = 1024
    source: str = field(default="defaults", compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.min_noise_multiplier >= 0, "min-noise-multiplier must be >= 0"),
            (self.max_epsilon_run > 0, "max-epsilon-run must be > 0 (inf for no cap)"),
            (self.max_epsilon_lifetime > 0, "max-epsilon-lifetime must be > 0 (inf for no cap)"),
            (0 < self.delta < 1, "delta must be in (0, 1)"),
            (self.unit in UNITS, "privacy-unit must be patient or record"),
            (self.max_local_steps >= 1, "max-local-steps must be >= 1"),
            (1 <= self.min_batch <= self.max_batch, "the batch range needs 1 <= min-batch <= max-batch"),
        ]
        for ok, msg in checks:
            if not ok:
                raise FedECGError(f"site privacy policy ({self.source}): {msg}")

    # ---- reading ---------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: dict, source: str = "policy") -> SitePolicy:
        """A policy from ``{key: value}`` (node-config keys, their underscore spelling or field names); values
        may be strings (``"true"``, ``"1e-5"``). Unknown keys are an error."""
        if not isinstance(data, dict):
            raise FedECGError(f"site privacy policy ({source}): expected a mapping, got {type(data).__name__}")
        kinds = {f.name: f.type for f in fields(cls) if f.name != "source"}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = _ALIASES.get(str(key), _ALIASES.get(str(key).replace("_", "-"), str(key)))
            if name not in kinds:
                raise FedECGError(f"site privacy policy ({source}): unknown key {key!r} "
                                  f"(known: {', '.join(NODE_KEYS)})")
            values[name] = _coerce(raw, str(kinds[name]), f"site privacy policy ({source}): {key}")
        return cls(**values, source=source)

    @classmethod
    def from_node_config(cls, node_config: dict) -> SitePolicy:
        """The node's policy: its policy file (``privacy-policy``), then inline keys (which win)."""
        data: dict[str, Any] = {}
        sources = []
        path = node_config.get(POLICY_FILE_KEY)
        if path:
            data.update(read_policy_file(Path(str(path)).expanduser()))
            sources.append(str(path))
        inline = {k: v for k, v in node_config.items() if k in NODE_KEYS}
        if inline:
            data.update(inline)
            sources.append("node config")
        return cls.from_mapping(data, " + ".join(sources) or "defaults")

    # ---- writing ---------------------------------------------------------------------------------------
    def to_node_config(self) -> dict[str, Any]:
        """The inline node-config keys that give this policy."""
        return {FIELD_KEYS[f.name]: getattr(self, f.name) for f in fields(self) if f.name != "source"}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        return (f"DP {'required' if self.dp_required else 'optional'}, per {self.unit}, δ ≤ {self.delta:.1e}, "
                f"σ ≥ {self.min_noise_multiplier:g}, ε ≤ {self.max_epsilon_run:g} per run and ≤ "
                f"{self.max_epsilon_lifetime:g} lifetime, ≤ {self.max_local_steps} steps per round, batch "
                f"{self.min_batch}-{self.max_batch} ({self.source})")


def read_policy_file(path: Path) -> dict:
    if not path.is_file():
        raise FedECGError(f"site privacy policy file {path} not found (node config {POLICY_FILE_KEY})")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (ValueError, Exception) as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise FedECGError(f"site privacy policy file {path}: cannot parse it ({exc})") from exc
    if not isinstance(data, dict):
        raise FedECGError(f"site privacy policy file {path}: top level must be a mapping")
    return data


def _coerce(raw: Any, typ: str, where: str) -> Any:
    try:
        if typ == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).strip().lower() in ("true", "yes", "1", "on"):
                return True
            if str(raw).strip().lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(raw)
        if typ == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(float(raw)) if isinstance(raw, str) else int(raw)
        if typ == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
            if math.isnan(value):
                raise ValueError(raw)
            return value
        return str(raw).strip().strip("'\"")
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"{where}: expected {typ}, got {raw!r}") from exc


# ---- simulation: what a simulated node's node config holds ---------------------------------------------------


def simulated_policy(spec: dict, site: str) -> SitePolicy:
    """The policy of simulated site ``site`` from a scenario's ``site_policy`` section: its top-level keys apply
    to every simulated site, ``sites: {name: {...}}`` overrides them per site."""
    spec = dict(spec or {})
    per_site = spec.pop("sites", None) or {}
    if not isinstance(per_site, dict):
        raise FedECGError("site_policy.sites must map site names to policy keys")
    data = {**spec, **(per_site.get(str(site)) or {})}
    return SitePolicy.from_mapping(data, f"scenario site_policy for site {site}")


def simulated_node_config(spec: dict, site: str, partition_id: int, num_partitions: int) -> dict[str, Any]:
    """A simulated SuperNode's node config: Flower's partition keys plus its site policy as inline keys."""
    return {"partition-id": partition_id, "num-partitions": num_partitions,
            **simulated_policy(spec, site).to_node_config()}


def simulated_node_configs(spec: dict, sites: list[str]) -> list[dict[str, Any]]:
    """Node configs of the simulated nodes, by partition id (``sites[i]`` is partition i's site name)."""
    return [simulated_node_config(spec, s, i, len(sites)) for i, s in enumerate(sites)]


def write_simulated_node_configs(path: str | Path, configs: list[dict[str, Any]]) -> Path:
    """The file ``$FEDECG_SIMULATED_NODE_CONFIG`` names for Flower's Simulation Engine, whose virtual SuperNodes
    get only Flower's partition keys: ``{partition id: the rest of that node's config}``."""
    path = Path(path)
    atomic_write_json(path, {str(i): {k: v for k, v in c.items() if k not in ("partition-id", "num-partitions")}
                             for i, c in enumerate(configs)})
    return path


def check_policy_spec(spec: dict, sites: list[str] | None = None) -> None:
    """Validate a scenario's ``site_policy`` section (FedECGError names the problem)."""
    if not isinstance(spec, dict):
        raise FedECGError("site_policy must be a mapping of policy keys (and sites: {name: {...}})")
    simulated_policy(spec, "<default>")
    for name in (spec.get("sites") or {}):
        if sites is not None and str(name) not in sites:
            raise FedECGError(f"site_policy.sites names {name!r}, which is not a site of this run "
                              f"({', '.join(sites)})")
        simulated_policy(spec, str(name))


# ---- the decision for one round --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the site does with one train request: refuse (``refusal``), train without DP (``private`` False)
    or train with DP-SGD at ``noise_multiplier`` / ``sample_rate`` for ``steps`` steps, accounted at ``delta``."""

    refusal: str | None = None
    private: bool = False
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int = 0
    delta: float | None = None

    @property
    def refused(self) -> bool:
        return self.refusal is not None


def decide(policy: SitePolicy, cfg, n_units: int, ledger: LifetimeLedger, run_name: str) -> Decision:
    """Check the server's run config ``cfg`` (a ScenarioConfig) against ``policy`` and the site's lifetime
    ``ledger`` (privacy.ledger.LifetimeLedger) for the next round of run ``run_name``."""
    dp, steps, batch = cfg.dp, cfg.train.local_steps, cfg.train.batch_size
    if not dp.enabled:
        if policy.dp_required:
            return Decision("the site's policy requires DP-SGD (dp-required=true); the server asked for "
                            "dp.enabled=false")
        return Decision(private=False, steps=steps)
    if dp.unit != policy.unit:
        return Decision(f"the site's privacy unit is {policy.unit} (privacy-unit); the server asked for "
                        f"dp.unit={dp.unit}")
    if dp.delta > policy.delta:
        return Decision(f"the server asked for delta={dp.delta:.2e}, above the site's delta {policy.delta:.2e}")
    run = ledger.run(run_name)
    delta = dp.delta if dp.delta > 0 else policy.delta
    if run is not None and run.history:
        if run.unit != dp.unit:
            return Decision(f"this run is accounted per {run.unit} in the site's ledger; the server now asks for "
                            f"dp.unit={dp.unit} (one run keeps one privacy unit)")
        if run.delta > policy.delta:
            return Decision(f"this run is accounted at delta={run.delta:.2e}, above the site's delta "
                            f"{policy.delta:.2e}")
        delta = run.delta  # one run keeps one δ
    if steps > policy.max_local_steps:
        return Decision(f"the server asked for {steps} local steps per round, above the site's max-local-steps "
                        f"{policy.max_local_steps}")
    if not policy.min_batch <= batch <= policy.max_batch:
        return Decision(f"the server asked for batch size {batch}, outside the site's allowed range "
                        f"{policy.min_batch}-{policy.max_batch} (min-batch, max-batch)")
    if n_units < 1:
        return Decision("the site has no training records")
    q = poisson_rate(n_units, batch)
    if dp.target_epsilon > 0:
        if dp.target_epsilon > policy.max_epsilon_run:
            return Decision(f"the server asked for a run spending epsilon {dp.target_epsilon:g}, above the "
                            f"site's max-epsilon-run {policy.max_epsilon_run:g}")
        sigma = plan_site(dp.target_epsilon, delta, n_units, batch, cfg.rounds * steps, dp.accountant,
                          policy.min_noise_multiplier).noise_multiplier
    else:
        sigma = float(dp.noise_multiplier)
        if sigma < policy.min_noise_multiplier:
            return Decision(f"the server asked for noise multiplier {sigma:g}, below the site's "
                            f"min-noise-multiplier {policy.min_noise_multiplier:g}")
    extra = [(sigma, q, steps)]
    spent = ledger_epsilon(run) if run is not None else 0.0
    done = run.steps if run is not None else 0
    projected = ledger_epsilon(run, delta, dp.accountant, extra=extra)
    server_budget = dp.budget_epsilon or dp.target_epsilon
    if server_budget > 0 and projected > server_budget + SERVER_BUDGET_TOLERANCE:
        return Decision(f"privacy budget spent: epsilon would reach {projected:.3f} > budget {server_budget:.3f} "
                        f"at delta={delta:.2e} (already {spent:.3f} after {done} steps)")
    if projected > policy.max_epsilon_run * (1 + 1e-9):
        return Decision(f"privacy budget spent: epsilon would reach {projected:.3f} > the site's max-epsilon-run "
                        f"{policy.max_epsilon_run:g} at delta={delta:.2e} (already {spent:.3f} after {done} steps)")
    lifetime = lifetime_epsilon(ledger, policy.delta, extra=extra)
    if lifetime > policy.max_epsilon_lifetime * (1 + 1e-9):
        return Decision(f"lifetime privacy budget spent: epsilon over all {len(ledger.runs)} run(s) at this site "
                        f"would reach {lifetime:.3f} > the site's max-epsilon-lifetime "
                        f"{policy.max_epsilon_lifetime:g} at delta={policy.delta:.2e}")
    return Decision(private=True, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
