"""The full fidelity report of ``fedecg evaluate fidelity``: every metric of docs/evaluation.md in one dict.

The FID embedding network is the ``evaluation.classifier`` CNN trained on the real set's superclass labels
(or loaded from ``classifier_path``); a trained network is cached in ``cache_dir`` under a hash of the real
set's ecg_ids, its source and the classifier config, so repeated evaluations reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evaluation import fidelity, intervals, personalisation, realism
from evaluation.classifier import ClassifierConfig, embed, load_classifier, save_classifier, train_classifier
from evaluation.ecgset import SUPERCLASSES, ECGSet, condition_keys, demographics, superclass_targets
from evaluation.leads import to_model_view
from fedecg.errors import FedECGError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FidelityConfig:
    group_by: str = "superclass"
    min_group: int = 3
    n_boot: int = 200
    max_delineate: int = 300
    spectral: fidelity.SpectralConfig = field(default_factory=fidelity.SpectralConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    seed: int = 0
    keep_bootstrap: bool = False  # include the ILC bootstrap samples (used by the ablation's CIs)


def fidelity_report(
    real: ECGSet,
    synthetic: ECGSet,
    cfg: FidelityConfig = FidelityConfig(),
    classifier_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device=None,
    source: str = "",
    classifier_train: ECGSet | None = None,
) -> dict:
    """Compute every fidelity metric; headline keys ``inter_lead_correlation_error``, ``snr_db``, ``fid``;
    ``realism`` holds ``evaluation.realism.realism_metrics`` plus its ``criteria`` and ``passed``.

    The FID classifier is trained on ``classifier_train`` (e.g. the real training folds) when given, else on
    ``real`` itself."""
    statements = real.statements if real.statements is not None else synthetic.statements
    r_keys = condition_keys(real, cfg.group_by, statements)
    s_keys = condition_keys(synthetic, cfg.group_by, statements)
    ilc = fidelity.inter_lead_correlation_error(
        real.signals,
        synthetic.signals,
        r_keys,
        s_keys,
        min_group=cfg.min_group,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        keep_samples=cfg.keep_bootstrap,
    )
    snr_real = fidelity.snr_db(real.signals, real.fs, cfg.spectral.band_hz)
    snr_syn = fidelity.snr_db(synthetic.signals, synthetic.fs, cfg.spectral.band_hz)
    psd = fidelity.psd_distance_per_lead(real.signals, synthetic.signals, cfg.spectral)
    mel = fidelity.mel_distance_per_lead(real.signals, synthetic.signals, cfg.spectral)

    # same seed for both subsets: identical sets give identical subsets (and a zero distance)
    r_sel = _cap(len(real), cfg.max_delineate, np.random.default_rng(cfg.seed))
    s_sel = _cap(len(synthetic), cfg.max_delineate, np.random.default_rng(cfg.seed))
    m_real = intervals.ecg_measures(real.signals[r_sel], real.fs)
    m_syn = intervals.ecg_measures(synthetic.signals[s_sel], synthetic.fs)
    effects = personalisation.compare_effects(
        personalisation.effect_sizes(demographics(real).iloc[r_sel], m_real),
        personalisation.effect_sizes(demographics(synthetic).iloc[s_sel], m_syn),
    )

    realism_block = _realism(real, synthetic)

    fid_value, fid_info = fid_score(
        real, synthetic, cfg.classifier, classifier_path, cache_dir, device, source, classifier_train
    )
    report = {
        "inter_lead_correlation_error": ilc["value"],
        "snr_db": float(np.mean(snr_syn)),
        "fid": fid_value,
        "snr_db_real": float(np.mean(snr_real)),
        "psd_distance_db": psd,
        "psd_distance_db_mean": float(np.mean(list(psd.values()))),
        "mel_distance_db": mel,
        "mel_distance_db_mean": float(np.mean(list(mel.values()))),
        "intervals": intervals.compare_distributions(m_real, m_syn),
        "personalisation": effects,
        "realism": realism_block,
        "inter_lead_correlation": ilc,
        "fid_classifier": fid_info,
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "config": asdict(cfg),
    }
    return _finite_or_none(report)


def fid_score(
    real: ECGSet,
    synthetic: ECGSet,
    ccfg: ClassifierConfig,
    classifier_path=None,
    cache_dir=None,
    device=None,
    source: str = "",
    classifier_train: ECGSet | None = None,
) -> tuple[float, dict]:
    """FID between the real and synthetic sets in the embedding space of a classifier trained on real data
    (``classifier_train``, default ``real``)."""
    if classifier_path is not None:
        model, _ = load_classifier(classifier_path, device)
        info = {"source": str(classifier_path), "trained": False}
    else:
        train_set = classifier_train if classifier_train is not None else real
        key = _cache_key(train_set, ccfg, source)
        cached = Path(cache_dir) / f"fid-classifier-{key}.pt" if cache_dir else None
        if cached is not None and cached.is_file():
            model, _ = load_classifier(cached, device)
            info = {"source": str(cached), "trained": False}
        else:
            y = superclass_targets(train_set)
            model = train_classifier(to_model_view(train_set.signals), y, ccfg, device)
            if cached is not None:
                save_classifier(cached, model, ccfg, list(SUPERCLASSES))
            info = {"source": str(cached) if cached else "in-memory", "trained": True}
        info["n_train"] = len(train_set)
    e_real = embed(model, to_model_view(real.signals), device)
    e_syn = embed(model, to_model_view(synthetic.signals), device)
    return fidelity.frechet_distance(e_real, e_syn), info


def _realism(real: ECGSet, synthetic: ECGSet) -> dict:
    """``realism_metrics`` + ``criteria`` + ``passed``; input it refuses (e.g. NaN samples, ECGs < 2 s) gives
    ``{"error": ...}`` so the other fidelity metrics are still reported."""
    try:
        block = realism.realism_metrics(real.signals, synthetic.signals, real.fs)
    except FedECGError as exc:
        log.warning("realism metrics not computed: %s", exc)
        return {"error": str(exc)}
    block["criteria"] = realism.realism_criteria(block)
    block["passed"] = all(block["criteria"].values())
    return block


def _cache_key(real: ECGSet, ccfg: ClassifierConfig, source: str) -> str:
    blob = json.dumps({"ids": [str(i) for i in real.meta.index], "src": source, "cfg": asdict(ccfg)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cap(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


def _finite_or_none(obj):
    """JSON-safe: NaN/inf → None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
