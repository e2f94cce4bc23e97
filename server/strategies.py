"""Aggregation strategies: Flower's own (FedAvg, FedProx, FedAdam, FedYogi), built from the typed config, and
their state (server-side moments of FedOpt) saved in checkpoints so a resumed run continues exactly.

Client-level DP (``strategy.client_dp``) wraps the strategy in Flower's
``DifferentialPrivacyServerSideFixedClipping``: each site's update is clipped to ``client_dp_clip`` and Gaussian
noise ``client_dp_noise * clip / n_sampled`` is added to the average. Its guarantee is per *site* (user-level), is
accounted separately from record-level DP-SGD, and assumes a trusted server (the server sees raw updates).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.serverapp import strategy as S

from fedecg.config import ScenarioConfig


def build_strategy(cfg: ScenarioConfig, num_sampled: int, max_nodes: int | None = None):
    """Flower strategy for the config. ``max_nodes`` (the number of partitions in a simulation) caps the
    minimum-node settings, which Flower would otherwise wait for forever."""
    sc = cfg.strategy
    cap = (lambda n: min(n, max_nodes)) if max_nodes else (lambda n: n)  # noqa: E731
    common = dict(fraction_train=sc.fraction_train, fraction_evaluate=sc.fraction_evaluate,
                  min_train_nodes=cap(sc.min_train_nodes), min_evaluate_nodes=cap(sc.min_train_nodes),
                  min_available_nodes=cap(sc.min_available_nodes))
    if sc.name == "fedavg":
        strategy = S.FedAvg(**common)
    elif sc.name == "fedprox":
        strategy = S.FedProx(proximal_mu=sc.proximal_mu, **common)
    elif sc.name == "fedadam":
        strategy = S.FedAdam(eta=sc.eta, eta_l=sc.eta_l, beta_1=sc.beta_1, beta_2=sc.beta_2, tau=sc.tau, **common)
    else:
        strategy = S.FedYogi(eta=sc.eta, eta_l=sc.eta_l, beta_1=sc.beta_1, beta_2=sc.beta_2, tau=sc.tau, **common)
    if sc.client_dp:
        strategy = S.DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=sc.client_dp_noise, clipping_norm=sc.client_dp_clip,
            num_sampled_clients=num_sampled)
    return strategy


def _inner(strategy):
    return getattr(strategy, "strategy", strategy)


def strategy_state(strategy) -> dict:
    """The mutable state a strategy carries between rounds (FedOpt moments), as torch tensors (so the
    checkpoint loads with ``weights_only=True``)."""
    inner = _inner(strategy)
    state = {}
    for name in ("m_t", "v_t"):
        value = getattr(inner, name, None)
        if value is not None:
            state[name] = {k: torch.from_numpy(np.array(v)) for k, v in value.items()}
    return state


def restore_strategy_state(strategy, state: dict) -> None:
    inner = _inner(strategy)
    for name, value in (state or {}).items():
        setattr(inner, name, {k: v.numpy() for k, v in value.items()})
