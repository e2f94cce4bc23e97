"""DP utility levers: noise multiplicity (exact per-example gradients of the K-averaged loss under Opacus) and
parameter-efficient fine-tuning (train.trainable: what a site trains, what its reply carries, how the server
validates, expands and aggregates it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fedecg import protocol as P
from fedecg.config import ScenarioConfig, parse_trainable


def _cfg(trainable: str = "all", k: int = 1, dp: bool = True) -> ScenarioConfig:
    return ScenarioConfig.from_dict({"model": {"preset": "tiny"}, "seed": 5,
                                     "train": {"local_steps": 2, "batch_size": 8, "lr": 1e-3, "precision": "fp32",
                                               "trainable": trainable},
                                     "dp": {"enabled": dp, "unit": "record", "noise_multiplicity": k}}).validate()


@pytest.fixture(scope="module")
def arrays(demo_ptbxl):
    from ptbxl.dataset import load_arrays

    return load_arrays(demo_ptbxl).subset(range(24))


def _batch(arrays, n):
    return tuple(torch.tensor(np.asarray(a[:n])) for a in (arrays.x, arrays.labels, arrays.demo, arrays.demo_mask))


# ---- noise multiplicity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("trainable", ["all", "lora:2"])
def test_noise_multiplicity_per_sample_gradients_equal_brute_force(arrays, trainable):
    """What Opacus clips (after sssd.dp.average_draws) is, per example b, ∇ (1/K) Σ_k loss(x_b, t_bk, noise_bk):
    checked against autograd on each example alone, for the full model and for LoRA adapters."""
    from opacus import GradSampleModule

    from sssd.checkpoint import build_model
    from sssd.diffusion import Schedule
    from sssd.dp import average_draws, register_grad_samplers, repeat_draws
    from sssd.losses import diffusion_loss
    from sssd.peft import apply_trainable

    register_grad_samplers()
    cfg = _cfg(trainable)
    mcfg = cfg.model.resolve()
    b, k = 3, 4
    x, labels, demo, mask = _batch(arrays, b)
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, mcfg.T, (b * k,), generator=gen)
    noise = torch.randn((b * k, *x.shape[1:]), generator=gen)
    model = apply_trainable(build_model(mcfg, None, torch.device("cpu")), parse_trainable(trainable),
                            torch.Generator().manual_seed(1))
    with torch.no_grad():  # a zero output layer would make most gradients exactly zero: perturb it
        for name, p in model.named_parameters():
            if "zero_conv" in name and p.requires_grad:
                p.normal_(0, 0.1, generator=gen)
    model.train()
    sched = Schedule.from_config(mcfg)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    brute = []
    for i in range(b):
        sl = slice(i * k, (i + 1) * k)
        xi, li, di, mi = repeat_draws(k, x[i:i + 1], labels[i:i + 1], demo[i:i + 1], mask[i:i + 1])
        loss, _ = diffusion_loss(model, sched, xi, li, di, mi, mcfg.loss, t=t[sl], noise=noise[sl], cond_dropout=False)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        brute.append({n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)})

    gsm = GradSampleModule(model, loss_reduction="mean")
    xk, lk, dk, mk = repeat_draws(k, x, labels, demo, mask)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss, _ = diffusion_loss(gsm, sched, xk, lk, dk, mk, mcfg.loss, t=t, noise=noise, cond_dropout=False)
        loss.backward()
    average_draws(gsm, b, k)
    checked = 0
    for n, p in params.items():
        assert p.grad_sample.shape[0] == b
        want = torch.stack([brute[i][n] for i in range(b)])
        scale = float(want.abs().max()) + 1e-12
        assert float((p.grad_sample - want).abs().max()) <= 1e-4 * scale + 1e-7, n
        checked += int(scale > 1e-9)
    assert checked >= len(params) // 2  # most of the compared gradients are not trivially zero


def test_noise_multiplicity_refuses_mismatched_rows():
    from sssd.dp import average_draws

    lin = torch.nn.Linear(2, 2)
    lin.weight.grad_sample = torch.zeros(5, 2, 2)
    with pytest.raises(RuntimeError, match="expected 2 x 3"):
        average_draws(lin, 2, 3)


def test_noise_multiplicity_trains_and_keeps_accounting(arrays):
    """K = 4 changes the gradients, not the accounting (same q, steps, sigma) and not the reply's keys."""
    from client.training import initial_weights_for_test, train_local

    outs = {}
    for k in (1, 4):
        cfg = _cfg(k=k)
        outs[k] = train_local(initial_weights_for_test(cfg), arrays, cfg, server_round=1, site="s",
                              device=torch.device("cpu"), noise_multiplier=1.0)
    assert outs[1].dp_entry == outs[4].dp_entry
    assert outs[1].state.keys() == outs[4].state.keys()
    assert any(not np.array_equal(outs[1].state[n], outs[4].state[n]) for n in outs[1].state)
    assert all(np.isfinite(v).all() for v in outs[4].state.values())


# ---- parameter-efficient fine-tuning --------------------------------------------------------------------


def test_trainable_spec_parsing():
    assert str(parse_trainable("lora:8")) == "lora:8" and parse_trainable("last-blocks:2").n == 2
    for bad in ("lora", "lora:0", "last-blocks:-1", "everything", "lora:8;rm"):
        with pytest.raises(ValueError, match="train.trainable"):
            parse_trainable(bad)
    with pytest.raises(Exception, match="train.trainable"):
        ScenarioConfig.from_dict({"train": {"trainable": "lora:x"}}).validate()


@pytest.mark.parametrize("trainable", ["conditioning", "last-blocks:1", "lora:2"])
def test_partial_reply_carries_only_trained_parameters(arrays, trainable):
    from client.training import initial_weights_for_test, train_local
    from sssd.peft import expand_reply, reply_reference, shapes_of

    cfg = _cfg(trainable)
    glob = initial_weights_for_test(cfg)
    res = train_local(glob, arrays, cfg, server_round=1, site="s", device=torch.device("cpu"), noise_multiplier=1.0)
    spec = parse_trainable(trainable)
    ref = reply_reference(shapes_of(glob), spec)
    assert list(res.state) == list(ref)
    assert all(res.state[n].shape == ref[n][0] for n in ref)
    full_size = sum(v.size for v in glob.values())
    sent = sum(v.size for v in res.state.values())
    assert 0 < sent < 0.5 * full_size  # traffic shrinks with the trained part
    assert res.metrics["trained-parameters"] == sent
    full = expand_reply(res.state, glob, spec)
    assert full.keys() == glob.keys()
    changed = {n for n in glob if not np.array_equal(full[n], glob[n])}
    assert changed  # it learnt something
    if spec.kind == "lora":
        assert all(n.endswith(".weight") for n in changed)  # only merged linear weights move
    else:
        assert changed <= set(ref)


def test_lora_merge_is_exact():
    from sssd.peft import expand_reply, linear_layers, shapes_of

    rng = np.random.default_rng(0)
    glob = {"a.weight": rng.normal(size=(4, 3)).astype(np.float32), "a.bias": np.zeros(4, np.float32),
            "s4.C": rng.normal(size=(4, 3)).astype(np.float32)}
    assert list(linear_layers(shapes_of(glob))) == ["a"]  # a 2-D S4 parameter without bias is not a layer
    lora = {"a.lora_A": rng.normal(size=(2, 3)).astype(np.float32),
            "a.lora_B": rng.normal(size=(4, 2)).astype(np.float32)}
    full = expand_reply(lora, glob, parse_trainable("lora:2"))
    np.testing.assert_allclose(full["a.weight"], glob["a.weight"] + lora["a.lora_B"] @ lora["a.lora_A"], rtol=1e-6)
    assert full["s4.C"] is glob["s4.C"] and full["a.bias"] is glob["a.bias"]


@pytest.fixture(autouse=True)
def _flower(flower_task_identity):
    pass


def _reply(arrays: dict, n: float = 10.0, site: str = "s"):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    content = RecordDict({P.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                          P.METRICS: MetricRecord({P.NUM_EXAMPLES: n}),
                          P.SITE_INFO: ConfigRecord({"site": site, "status": P.STATUS_OK, "message": ""})})
    return Message(content=content, dst_node_id=1, message_type="train")


def test_server_validates_expands_and_aggregates_lora_replies():
    """Two LoRA replies: foreign or missing keys and wrong shapes are rejected; accepted ones aggregate (FedAvg,
    weighted) to the average of the sites' merged layers; frozen parameters stay the global ones."""
    from flwr.serverapp.strategy import FedAvg

    from server.robust import RobustRule, aggregation_replies
    from server.validation import check_reply

    rng = np.random.default_rng(1)
    glob = {"a.weight": rng.normal(size=(4, 3)).astype(np.float32), "a.bias": rng.normal(size=4).astype(np.float32),
            "s4.D": rng.normal(size=4).astype(np.float32)}
    spec = "lora:2"

    def lora(seed):
        r = np.random.default_rng(seed)
        return {"a.lora_A": r.normal(size=(2, 3)).astype(np.float32),
                "a.lora_B": r.normal(0, 0.1, size=(4, 2)).astype(np.float32)}

    one, two = lora(2), lora(3)
    v1 = check_reply(_reply(one, 10.0, "s1"), glob, 100.0, "s1", trainable=spec)
    v2 = check_reply(_reply(two, 30.0, "s2"), glob, 100.0, "s2", trainable=spec)
    assert v1.accepted and v2.accepted
    merged1 = glob["a.weight"] + one["a.lora_B"] @ one["a.lora_A"]
    assert v1.update_norm == pytest.approx(float(np.linalg.norm(merged1 - glob["a.weight"])), rel=1e-5)

    foreign = check_reply(_reply({**one, "a.weight": glob["a.weight"]}), glob, 100.0, trainable=spec)
    assert not foreign.accepted and "1 unexpected" in foreign.reason
    missing = check_reply(_reply({"a.lora_A": one["a.lora_A"]}), glob, 100.0, trainable=spec)
    assert not missing.accepted and "missing ['a.lora_B']" in missing.reason
    wrong = check_reply(_reply({**one, "a.lora_A": np.zeros((3, 3), np.float32)}), glob, 100.0, trainable=spec)
    assert not wrong.accepted and "wrong shape" in wrong.reason
    full_under_lora = check_reply(_reply(glob), glob, 100.0, trainable=spec)  # a full model is not what was asked
    assert not full_under_lora.accepted
    nan = check_reply(_reply({**one, "a.lora_B": np.full((4, 2), np.nan, np.float32)}), glob, 100.0, trainable=spec)
    assert not nan.accepted and "non-finite" in nan.reason

    accepted = [("s1", _reply(one, 10.0, "s1"), v1), ("s2", _reply(two, 30.0, "s2"), v2)]
    agg, _ = FedAvg().aggregate_train(1, aggregation_replies(RobustRule("none"), accepted, glob))
    merged2 = glob["a.weight"] + two["a.lora_B"] @ two["a.lora_A"]
    np.testing.assert_allclose(agg["a.weight"].numpy(), 0.25 * merged1 + 0.75 * merged2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(agg["a.bias"].numpy(), glob["a.bias"])
    np.testing.assert_array_equal(agg["s4.D"].numpy(), glob["s4.D"])


def test_server_rejects_foreign_keys_in_partial_replies():
    from server.validation import check_reply

    glob = {"cond_embed.label.weight": np.zeros((2, 3), np.float32), "cond_embed.label.bias": np.zeros(2, np.float32),
            "blocks.0.s4_1.D": np.zeros(4, np.float32)}
    good = {k: v + 0.1 for k, v in glob.items() if k.startswith("cond_embed.")}
    v = check_reply(_reply(good), glob, 10.0, trainable="conditioning")
    assert v.accepted and v.arrays is not None and np.array_equal(v.arrays["blocks.0.s4_1.D"], glob["blocks.0.s4_1.D"])
    bad = check_reply(_reply({**good, "blocks.0.s4_1.D": glob["blocks.0.s4_1.D"] + 5}), glob, 10.0,
                      trainable="conditioning")
    assert not bad.accepted and "unexpected" in bad.reason


def test_egress_blocks_a_full_model_when_lora_was_asked(arrays):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    from client.egress import check_outgoing
    from client.training import initial_weights_for_test
    from fedecg.errors import FedECGError

    cfg = _cfg("lora:2")
    glob = initial_weights_for_test(cfg)
    request = Message(content=RecordDict({
        P.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in glob.items()}),
        P.CONFIG: ConfigRecord({P.RUN_CONFIG_JSON: cfg.to_json()})}), dst_node_id=1, message_type="train")
    with pytest.raises(FedECGError, match="train.trainable"):
        check_outgoing(Message(content=_reply(glob).content, reply_to=request), request)


def test_bounded_conditioning_caps_the_embedding_norm():
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(6, 71, generator=gen) < 0.5).float()  # many labels: a large embedding
    demo, mask = torch.randn(6, 4, generator=gen) * 5, torch.ones(6, 4)
    free = SSSDDenoiser(model_preset("tiny"))
    bounded = SSSDDenoiser(model_preset("tiny", cond_max_norm=0.5))
    bounded.load_state_dict(free.state_dict())  # same weights, only the bound differs
    e_free, e_b = free.cond_embed(labels, demo, mask), bounded.cond_embed(labels, demo, mask)
    assert float(e_free.norm(dim=1).min()) > 0.5  # the bound is active on these inputs
    assert torch.all(e_b.norm(dim=1) <= 0.5 + 1e-5)
    torch.testing.assert_close(e_b / e_b.norm(dim=1, keepdim=True), e_free / e_free.norm(dim=1, keepdim=True))
    with pytest.raises(Exception, match="cond_max_norm"):
        model_preset("tiny", cond_max_norm=-1.0)


def test_fast_samplers_are_accepted_by_synthesis_and_the_config():
    from evaluation.synthesize import SamplerSettings
    from fedecg.errors import FedECGError

    assert SamplerSettings(sampler="dpmpp2m-sde", steps=15).sampler == "dpmpp2m-sde"
    with pytest.raises(FedECGError, match="steps >= 2"):
        SamplerSettings(sampler="dpmpp2m", steps=1)
    with pytest.raises(FedECGError, match="--sampler must be one of"):
        SamplerSettings(sampler="euler")
    assert ScenarioConfig.from_dict({"output": {"sampler": "dpmpp2m-sde", "sampler_steps": 15}}).validate()
    with pytest.raises(FedECGError, match="output.sampler must be"):
        ScenarioConfig.from_dict({"output": {"sampler": "dpm"}}).validate()
