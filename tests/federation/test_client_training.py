"""Local training at a site: large logical DP batches through Opacus' BatchMemoryManager, precision choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedecg.config import ScenarioConfig


def _cfg(unit: str = "patient", **train) -> ScenarioConfig:
    return ScenarioConfig.from_dict({"model": {"preset": "tiny"}, "seed": 3,
                                     "train": {"local_steps": 3, "batch_size": 16, "lr": 1e-3,
                                               "precision": "fp32", **train},
                                     "dp": {"enabled": True, "max_grad_norm": 1.0, "unit": unit}}).validate()


@pytest.fixture(scope="module")
def site_arrays(demo_ptbxl):
    from ptbxl.dataset import load_arrays

    return load_arrays(demo_ptbxl).subset(range(40))


@pytest.fixture(scope="module")
def site_patients(demo_ptbxl, site_arrays):
    from client.data import patient_ids
    from ptbxl.layout import read_database

    return patient_ids(read_database(demo_ptbxl), site_arrays.ecg_ids)


def _train(cfg, arrays, sigma, patients=None):
    from client.training import initial_weights_for_test, train_local

    return train_local(initial_weights_for_test(cfg), arrays, cfg, server_round=1, site="s",
                       device=torch.device("cpu"), noise_multiplier=sigma, patient_ids=patients)


def test_patient_level_dp_samples_patients_one_record_each(site_arrays, site_patients):
    from ptbxl.dataset import PatientSampledDataset

    n_patients = len(np.unique(site_patients))
    assert n_patients < len(site_arrays)  # the demo data has patients with several records
    ds = PatientSampledDataset(site_arrays, site_patients, torch.Generator().manual_seed(0))
    assert len(ds) == n_patients
    x = np.asarray(site_arrays.x)
    for i, group in enumerate(ds.groups):
        assert len(set(site_patients[group])) == 1  # a group is one patient's records, all of them
        item = ds[i][0].numpy()
        assert any(np.array_equal(item, x[j]) for j in group)
    assert sum(len(g) for g in ds.groups) == len(site_arrays)
    res = _train(_cfg(), site_arrays, sigma=1.0, patients=site_patients)
    assert res.dp_entry["sample_rate"] == pytest.approx(1 / math.ceil(n_patients / 16))


def test_patient_level_dp_without_patient_ids_is_refused(site_arrays):
    from fedecg.errors import FedECGError

    with pytest.raises(FedECGError, match="patient_id"):
        _train(_cfg(), site_arrays, sigma=1.0, patients=None)


def test_physical_batches_count_one_accounted_step_per_logical_batch(site_arrays):
    res = _train(_cfg("record", physical_batch_size=4), site_arrays, sigma=1.0)
    assert res.dp_entry["steps"] == 3 and res.metrics["steps"] == 3.0
    # a logical batch of 16 from 40 records: q = 1 / ceil(40 / 16); physical batches of <= 4 make ~4 per step
    assert res.dp_entry["sample_rate"] == pytest.approx(1 / 3)
    assert res.metrics["physical-batches"] >= 6


def test_split_logical_batch_equals_unsplit_without_noise(site_arrays, monkeypatch):
    """Same Poisson batches, same clipping: splitting only changes memory. To compare updates, the DP noise is
    ~0 and each example's timestep and diffusion noise are a function of the example (not of its batch)."""
    import sssd.losses

    real_loss = sssd.losses.diffusion_loss

    def per_example_loss(model, schedule, x, labels, demo, mask, cfg, generator=None, **kw):
        t = (x[:, 0, :50].abs().sum(1) * 1e3).long() % schedule.T
        noise = torch.sin(x * 37.0 + torch.arange(x.shape[-1]) * 0.37)
        return real_loss(model, schedule, x, labels, demo, mask, cfg, generator, t=t, noise=noise,
                         cond_dropout=False)

    monkeypatch.setattr(sssd.losses, "diffusion_loss", per_example_loss)
    a = _train(_cfg("record", physical_batch_size=0), site_arrays, sigma=1e-12)
    b = _train(_cfg("record", physical_batch_size=5), site_arrays, sigma=1e-12)
    diff = max(float(np.abs(a.state[k] - b.state[k]).max()) for k in a.state)
    moved = max(float(np.abs(a.state[k]).max()) for k in a.state)
    assert moved > 0 and diff < 1e-4, diff


def test_precision_auto_is_bf16_only_on_native_bf16_cpus(monkeypatch):
    import sssd.sampling
    from client.training import train_precision

    cfg = _cfg(precision="auto")
    monkeypatch.setattr(sssd.sampling, "cpu_has_native_bf16", lambda: True)
    assert train_precision(cfg, torch.device("cpu"), private=True) == "bf16"
    monkeypatch.setattr(sssd.sampling, "cpu_has_native_bf16", lambda: False)
    assert train_precision(cfg, torch.device("cpu"), private=True) == "fp32"
    assert train_precision(_cfg(precision="fp32"), torch.device("cpu"), private=False) == "fp32"
