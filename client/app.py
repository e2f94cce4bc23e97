"""The Flower ClientApp run at every site: a thin adapter from Messages to client.training.

train:    global weights + run config → local SSSD-MIDT training (optionally DP-SGD) → weights + aggregate metrics
evaluate: global weights → validation loss on the site's own validation records

The site's privacy ledger lives in ``context.state`` and in a node-local file (see client.ledger), so epsilon
accumulates over rounds and survives restarts. A site whose budget would be exceeded refuses to train and says so
(status ``refused``). Every outgoing reply passes the egress guard (client.egress): only parameters and allow-listed
aggregate metrics leave the site.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.egress import egress_guard
from client.ledger import STATE_KEY, SiteLedger
from fedecg import protocol as P
from fedecg.config import ScenarioConfig
from fedecg.errors import FedECGError

log = logging.getLogger(__name__)

app = ClientApp(mods=[egress_guard])


@app.train()
def train(msg: Message, context: Context) -> Message:
    from client.data import load_site_data
    from client.training import poisson_rate, train_local
    from fedecg.device import choose_device

    cfg, config = read_run_config(msg)
    server_round = int(config.get(P.SERVER_ROUND, 0))
    site = load_site_data(dict(context.node_config), config)
    n_train = len(site.train.ecg_ids)
    n_units = site.privacy_units(cfg.dp.unit)  # patients (dp.unit patient) or records: what DP-SGD samples
    _set_threads(cfg)
    device = choose_device(cfg.train.device)
    ledger = load_ledger(context, site, cfg, str(config.get(P.RUN_NAME, "run")))
    if cfg.dp.enabled and ledger.entries and ledger.unit != cfg.dp.unit:
        raise FedECGError(f"site {site.name}: its privacy ledger for this run accounts per {ledger.unit}, the "
                          f"server asks for dp.unit={cfg.dp.unit}; one run keeps one privacy unit")

    sigma = None
    if cfg.dp.enabled:
        q = poisson_rate(n_units, cfg.train.batch_size)
        if cfg.dp.target_epsilon > 0:
            from privacy.accounting import plan_noise_multiplier

            sigma = plan_noise_multiplier(cfg.dp.target_epsilon, ledger.delta, q,
                                          cfg.rounds * cfg.train.local_steps, cfg.dp.accountant)
        else:
            sigma = cfg.dp.noise_multiplier
        budget = cfg.dp.budget_epsilon or cfg.dp.target_epsilon
        if budget > 0:
            projected = ledger.epsilon(extra=[{"noise_multiplier": sigma, "sample_rate": q,
                                               "steps": cfg.train.local_steps}])
            # get_noise_multiplier meets the target within its 0.01 tolerance
            if projected > budget + 0.011:
                reason = (f"privacy budget spent: epsilon would reach {projected:.3f} > budget {budget:.3f} "
                          f"at delta={ledger.delta:.2e} (already {ledger.epsilon():.3f} after "
                          f"{ledger.steps} steps)")
                log.warning("site %s refuses round %d: %s", site.name, server_round, reason)
                return _reply(msg, site.name, P.STATUS_REFUSED, reason, None,
                              {P.NUM_EXAMPLES: 0.0, "refused": 1.0, "dp-enabled": 1.0,
                               "epsilon": ledger.epsilon(), "delta": ledger.delta})

    mu = float(config.get(P.PROXIMAL_MU, 0.0)) if cfg.strategy.name == "fedprox" else 0.0
    global_state = {k: a.numpy() for k, a in msg.content[P.ARRAYS].items()}
    result = train_local(global_state, site.train, cfg, server_round=server_round, site=site.name,
                         device=device, noise_multiplier=sigma, proximal_mu=mu,
                         patient_ids=site.train_patients)
    metrics = dict(result.metrics)
    metrics[P.NUM_EXAMPLES] = float(n_train)
    metrics["dp-enabled"] = 1.0 if cfg.dp.enabled else 0.0
    if result.dp_entry is not None:
        ledger.record(server_round, **result.dp_entry)
        save_ledger(context, site, ledger, str(config.get(P.RUN_NAME, "run")))
        metrics.update({"epsilon": ledger.epsilon(), "delta": ledger.delta,
                        "dp-steps": float(ledger.steps), "dp-sample-rate": result.dp_entry["sample_rate"],
                        "dp-noise-multiplier": result.dp_entry["noise_multiplier"],
                        "dp-max-grad-norm": result.dp_entry["max_grad_norm"],
                        "dp-rounds": float(len(ledger.entries)), "dp-units": float(ledger.n_records),
                        "dp-patient-level": 1.0 if ledger.unit == "patient" else 0.0})
    return _reply(msg, site.name, P.STATUS_OK, "", result.state, metrics)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from client.data import load_site_data
    from client.training import validate_local
    from fedecg.device import choose_device

    cfg, config = read_run_config(msg)
    site = load_site_data(dict(context.node_config), config)
    _set_threads(cfg)
    if site.val is None or len(site.val.ecg_ids) == 0:
        return _reply(msg, site.name, P.STATUS_OK, "no validation records", None, {P.NUM_EXAMPLES: 0.0})
    global_state = {k: a.numpy() for k, a in msg.content[P.ARRAYS].items()}
    metrics = validate_local(global_state, site.val, cfg, site=site.name, device=choose_device(cfg.train.device))
    return _reply(msg, site.name, P.STATUS_OK, "", None, metrics)


# ---- helpers -------------------------------------------------------------------------------------------


def read_run_config(msg: Message) -> tuple[ScenarioConfig, dict]:
    """The run configuration the server sent, validated (a malformed message gets a clear error)."""
    if P.CONFIG not in msg.content.config_records:
        raise FedECGError(f"message from the server has no {P.CONFIG!r} ConfigRecord")
    config = dict(msg.content.config_records[P.CONFIG])
    if P.RUN_CONFIG_JSON not in config:
        raise FedECGError(f"server config has no {P.RUN_CONFIG_JSON!r} entry")
    cfg = ScenarioConfig.from_json(str(config[P.RUN_CONFIG_JSON]), "server config").validate()
    if P.ARRAYS not in msg.content.array_records:
        raise FedECGError(f"message from the server has no {P.ARRAYS!r} ArrayRecord")
    return cfg, config


def load_ledger(context: Context, site, cfg: ScenarioConfig, run_name: str) -> SiteLedger:
    """The site's ledger: node-local file first (survives restarts), else context.state, else a new one."""
    path = _ledger_path(site, run_name)
    ledger = SiteLedger.load(path)
    if ledger is None and STATE_KEY in context.state.config_records:
        ledger = SiteLedger.from_dict(json.loads(str(context.state.config_records[STATE_KEY]["json"])),
                                     "context.state")
    if ledger is None:
        n = site.privacy_units(cfg.dp.unit)
        ledger = SiteLedger(site=site.name, n_records=n, delta=cfg.dp.delta or 1.0 / n,
                            accountant=cfg.dp.accountant, unit=cfg.dp.unit)
    return ledger


def save_ledger(context: Context, site, ledger: SiteLedger, run_name: str) -> None:
    ledger.save(_ledger_path(site, run_name))
    context.state.config_records[STATE_KEY] = ConfigRecord({"json": json.dumps(ledger.to_dict())})


def _ledger_path(site, run_name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_name)
    return Path(site.state_dir) / f"ledger-{safe}.json"


def _set_threads(cfg: ScenarioConfig) -> None:
    if cfg.train.threads > 0:
        import torch

        torch.set_num_threads(cfg.train.threads)


def _reply(msg: Message, site: str, status: str, message: str, state: dict | None,
           metrics: dict[str, float]) -> Message:
    content = RecordDict()
    if state is not None:
        content[P.ARRAYS] = ArrayRecord(array_dict={k: Array(v) for k, v in state.items()})
    content[P.METRICS] = MetricRecord({k: float(v) for k, v in metrics.items()})
    content[P.SITE_INFO] = ConfigRecord({"site": site, "status": status, "message": message[:500]})
    return Message(content=content, reply_to=msg)
