"""The Flower ClientApp run at every site: a thin adapter from Messages to client.training.

train:    global weights + run config → the site's policy decides → local SSSD-MIDT training (DP-SGD) → weights +
          aggregate metrics
evaluate: global weights → validation loss on the site's own validation records

The site's privacy is its own (the bookkeeping is privacy.spend; this module only calls it). Its policy
(privacy.policy) comes from its node config, never from the server:
a request the policy forbids (DP off when required, σ below the site's minimum, another privacy unit or a
larger δ, too many steps, a batch outside the allowed range, a round that would take the run's or the site's
lifetime ε past its cap) is refused (status ``refused``, the reason in the reply's message and the site's log).
With a target ε the site plans σ itself. Its lifetime ledger (privacy.ledger.LifetimeLedger in one file per
site, through privacy.ledger.LedgerStore; a copy in ``context.state``) records each round's spend durably
*before* training; every train reply carries the run's ε and the ledger's digest.
Every outgoing reply passes the egress guard (client.egress): only parameters and allow-listed aggregate
metrics leave the site.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.egress import egress_guard
from client.worker_channel import forward_to_worker
from fedecg import protocol as P
from fedecg.errors import FedECGError
from fedecg.wire import from_record, to_record
from privacy.ledger import LedgerStore, LifetimeLedger
from privacy.policy import SIMULATED_NODE_CONFIG_ENV, SitePolicy
from privacy.spend import confirm_after_training, pay_before_training, refusal_metrics, spend_metrics

# A fresh flwr-clientapp process imports this module for every message (and with a resident worker only forwards
# it), so site data, training, the device choice and fedecg.config (torch, pandas) are imported where used.
if TYPE_CHECKING:  # imported where used: fedecg.config pulls pandas
    from fedecg.config import ScenarioConfig

log = logging.getLogger(__name__)

STATE_KEY = "fedecg-ledger"  # ConfigRecord key in context.state: a copy of the site's ledger (its file is the truth)

app = ClientApp(mods=[forward_to_worker, egress_guard])


@app.train()
def train(msg: Message, context: Context) -> Message:
    # local: keeps the flwr-clientapp import thin (no torch, pandas), tests/test_import_graph.py
    from client.data import load_site_data
    from client.training import train_local
    from fedecg.device import choose_device

    node_config = site_node_config(context)
    policy = SitePolicy.from_node_config(node_config)  # the site's own, never the server's
    cfg, config = read_run_config(msg)
    server_round = int(config.get(P.SERVER_ROUND, 0))
    run_name = str(config.get(P.RUN_NAME, "run"))
    site = load_site_data(node_config, config)
    n_train = len(site.train.ecg_ids)
    n_units = site.privacy_units(policy.unit)  # patients (unit patient) or records: what DP-SGD samples
    _set_threads(cfg)
    device = choose_device(cfg.train.device)
    global_state = from_record(msg.content[P.ARRAYS])
    val_metrics = _evaluate_first(global_state, site, cfg, config, device)

    store = LedgerStore(site.state_dir, site.name)
    paid = pay_before_training(store, _state_copy(context), policy, cfg, n_units, run_name, server_round, site.name)
    decision, ledger = paid.decision, paid.ledger
    _state_save(context, ledger)
    if decision.refused:
        log.warning("site %s refuses round %d of run %s: %s", site.name, server_round, run_name, decision.refusal)
        metrics = {**refusal_metrics(ledger, run_name, policy, cfg.dp.enabled), **val_metrics}
        run = ledger.run(run_name)
        return _reply(msg, site.name, P.STATUS_REFUSED, decision.refusal, None, metrics,
                      digest=run.digest() if run is not None and run.history else None)
    if decision.private:
        log.info("site %s, round %d: DP-SGD with sigma %.4f (site's policy: %s)", site.name, server_round,
                 decision.noise_multiplier, policy.describe())

    mu = float(config.get(P.PROXIMAL_MU, 0.0)) if cfg.strategy.name == "fedprox" else 0.0
    result = train_local(global_state, site.train, cfg, server_round=server_round, site=site.name,
                         device=device, noise_multiplier=decision.noise_multiplier if decision.private else None,
                         proximal_mu=mu, patient_ids=site.train_patients)
    metrics = dict(result.metrics)
    metrics.update(val_metrics)
    metrics[P.NUM_EXAMPLES] = float(n_train)
    metrics["dp-enabled"] = 1.0 if decision.private else 0.0
    digest = None
    if decision.private:
        ledger, entry = confirm_after_training(store, _state_copy(context), run_name, paid, result.dp_entry,
                                               site.name, server_round)
        _state_save(context, ledger)
        digest = ledger.run(run_name).digest()
        metrics.update(spend_metrics(ledger, run_name, entry))
    return _reply(msg, site.name, P.STATUS_OK, "", result.state, metrics, digest=digest)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # local: keeps the flwr-clientapp import thin (no torch, pandas), tests/test_import_graph.py
    from client.data import load_site_data
    from client.training import validate_local
    from fedecg.device import choose_device

    cfg, config = read_run_config(msg)
    site = load_site_data(site_node_config(context), config)
    _set_threads(cfg)
    if site.val is None or len(site.val.ecg_ids) == 0:
        return _reply(msg, site.name, P.STATUS_OK, "no validation records", None, {P.NUM_EXAMPLES: 0.0})
    global_state = from_record(msg.content[P.ARRAYS])
    metrics = validate_local(global_state, site.val, cfg, site=site.name, device=choose_device(cfg.train.device))
    return _reply(msg, site.name, P.STATUS_OK, "", None, metrics)


# ---- helpers -------------------------------------------------------------------------------------------


def _evaluate_first(global_state: dict, site, cfg: ScenarioConfig, config: dict, device) -> dict[str, float]:
    """With ``strategy.evaluate: with-train`` the train message asks the site to score the global model it
    brings (the previous round's) on its validation records before training: the evaluate message of that
    round, without its own ClientApp process. ``val-examples`` is the count (num-examples is the training one)."""
    if not config.get(P.EVALUATE_FIRST):
        return {}
    if site.val is None or len(site.val.ecg_ids) == 0:
        return {"val-examples": 0.0}  # what its evaluate reply would say: no validation records
    from client.training import validate_local  # local: keeps the flwr-clientapp import thin (no torch)

    metrics = validate_local(global_state, site.val, cfg, site=site.name, device=device)
    metrics["val-examples"] = metrics.pop(P.NUM_EXAMPLES, float(len(site.val.ecg_ids)))
    return metrics



def read_run_config(msg: Message) -> tuple[ScenarioConfig, dict]:
    """The run configuration the server sent, validated (a malformed message gets a clear error)."""
    from fedecg.config import ScenarioConfig  # local: keeps the flwr-clientapp import thin (no pandas)

    if P.CONFIG not in msg.content.config_records:
        raise FedECGError(f"message from the server has no {P.CONFIG!r} ConfigRecord")
    config = dict(msg.content.config_records[P.CONFIG])
    if P.RUN_CONFIG_JSON not in config:
        raise FedECGError(f"server config has no {P.RUN_CONFIG_JSON!r} entry")
    cfg = ScenarioConfig.from_json(str(config[P.RUN_CONFIG_JSON]), "server config").validate()
    if P.ARRAYS not in msg.content.array_records:
        raise FedECGError(f"message from the server has no {P.ARRAYS!r} ArrayRecord")
    return cfg, config


def site_node_config(context: Context) -> dict:
    """The node's own configuration. A simulated node in Flower's Simulation Engine only gets Flower's partition
    keys; the simulation harness hands it the rest (its site policy) through a file named by
    ``$FEDECG_SIMULATED_NODE_CONFIG`` (privacy.policy.write_simulated_node_configs), keyed by partition id."""
    node_config = dict(context.node_config)
    path = os.environ.get(SIMULATED_NODE_CONFIG_ENV)
    if path and P.NODE_PARTITION_ID in node_config:
        try:
            extra = json.loads(Path(path).read_text(encoding="utf-8"))[str(int(node_config[P.NODE_PARTITION_ID]))]
        except (OSError, ValueError, KeyError) as exc:
            raise FedECGError(f"simulated node {node_config[P.NODE_PARTITION_ID]}: cannot read its node config "
                              f"from {path} ({exc})") from exc
        node_config = {**extra, **node_config}
    return node_config


def _state_copy(context: Context) -> dict | None:
    if STATE_KEY in context.state.config_records:
        data = json.loads(str(context.state.config_records[STATE_KEY]["json"]))
        if isinstance(data, dict) and "runs" in data:
            return data
    return None


def _state_save(context: Context, ledger: LifetimeLedger) -> None:
    context.state.config_records[STATE_KEY] = ConfigRecord({"json": json.dumps(ledger.to_dict())})


def _set_threads(cfg: ScenarioConfig) -> None:
    if cfg.train.threads > 0:
        import torch  # local: keeps the flwr-clientapp import thin (no torch), tests/test_import_graph.py

        torch.set_num_threads(cfg.train.threads)


def _reply(msg: Message, site: str, status: str, message: str, state: dict | None,
           metrics: dict[str, float], digest: str | None = None) -> Message:
    content = RecordDict()
    if state is not None:
        content[P.ARRAYS] = to_record(state)
    content[P.METRICS] = MetricRecord({k: float(v) for k, v in metrics.items()})
    info = {"site": site, "status": status, "message": message[:500]}
    if digest is not None:
        info[P.LEDGER_DIGEST] = digest
    content[P.SITE_INFO] = ConfigRecord(info)
    return Message(content=content, reply_to=msg)
