import pytest
import torch

from fedecg.device import torch_threads
from sssd.config import model_preset
from sssd.model import SSSDDenoiser, step_embedding, unwrap


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def _inputs(b=3, length=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 8, length, generator=g)
    t = torch.randint(0, 200, (b,), generator=g)
    labels = (torch.rand(b, 71, generator=g) < 0.05).float()
    demo = torch.randn(b, 4, generator=g)
    mask = torch.ones(b, 4)
    return x, t, labels, demo, mask


def test_output_shape_and_exact_zeros_at_init():
    model = SSSDDenoiser(model_preset("tiny"))
    out = model(*_inputs())
    assert out.shape == (3, 8, 1000) and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0


def test_conditioning_changes_output_once_output_layer_is_nonzero():
    model = SSSDDenoiser(model_preset("tiny"))
    with torch.no_grad():
        model.zero_conv.weight.normal_(0, 0.1)
    x, t, labels, demo, mask = _inputs()
    base = model(x, t, labels, demo, mask)
    assert not torch.allclose(base, model(x, t, torch.zeros_like(labels), demo, mask))
    assert not torch.allclose(base, model(x, t, labels, demo, torch.zeros_like(mask)))
    assert not torch.allclose(base, model(x, (t + 50) % 200, labels, demo, mask))
    # masked demographic values are ignored
    assert torch.allclose(
        model(x, t, labels, demo, torch.zeros_like(mask)),
        model(x, t, labels, demo * 7, torch.zeros_like(mask)),
    )


def test_same_init_seed_same_weights_and_no_buffers():
    a, b = SSSDDenoiser(model_preset("tiny")), SSSDDenoiser(model_preset("tiny"))
    c = SSSDDenoiser(model_preset("tiny", init_seed=1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert list(a.buffers()) == []
    assert all(v.dtype == torch.float32 for v in sa.values())


def test_every_parameter_gets_a_gradient():
    model = SSSDDenoiser(model_preset("tiny"))
    with torch.no_grad():
        model.zero_conv.weight.normal_(0, 0.1)
    model(*_inputs()).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_block_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = SSSDDenoiser(model_preset("tiny"))
    ckpt = SSSDDenoiser(model_preset("tiny", checkpoint_blocks=True))
    for m in (plain, ckpt):
        with torch.no_grad():
            m.zero_conv.weight.fill_(0.05)
        m(*_inputs(length=200)).pow(2).mean().backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n


def test_step_embedding_is_sinusoidal():
    emb = step_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(emb[1, 0], torch.sin(torch.tensor(5.0)))


def test_unwrap_strips_wrappers():
    model = SSSDDenoiser(model_preset("tiny"))

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self._module = m

    assert unwrap(Wrapper(Wrapper(model))) is model
    assert unwrap(model) is model


@pytest.mark.parametrize("length", [100, 257])
def test_other_sequence_lengths(length):
    model = SSSDDenoiser(model_preset("tiny", seq_len=length))
    assert model(*_inputs(length=length)).shape == (3, 8, length)


def test_empty_batch_forward_and_backward():
    """Poisson sampling under DP-SGD can produce empty batches (MKL's FFT rejects size-0 inputs)."""
    from sssd.diffusion import Schedule
    from sssd.losses import diffusion_loss

    cfg = model_preset("tiny", seq_len=100)
    model = SSSDDenoiser(cfg)
    empty = torch.zeros(0, 8, 100)
    loss, _ = diffusion_loss(
        model,
        Schedule.from_config(cfg),
        empty,
        torch.zeros(0, 71),
        torch.zeros(0, 4),
        torch.zeros(0, 4),
        cfg.loss,
        torch.Generator(),
    )
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
