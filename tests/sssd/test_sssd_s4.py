import numpy as np
import pytest
import torch

from fedecg.device import torch_threads
from sssd.s4 import S4DConv, S4Layer, cached_kernels, hippo_diagonal_init, kernel_vjp, s4d_grad_sample


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def _naive_kernel(conv: S4DConv, length: int) -> torch.Tensor:
    dt = torch.exp(conv.log_dt.double())
    a = torch.complex(-torch.exp(conv.log_A_real.double()), conv.A_imag.double())
    dta = a * dt[:, None]
    c = torch.view_as_complex(conv.C.double())
    w = c * (torch.exp(dta) - 1) / a
    vand = torch.exp(dta[..., None] * torch.arange(length, dtype=torch.float64))  # (H, n, L)
    return 2 * torch.einsum("khn,hnl->khl", w, vand).real


def test_legs_init_is_stable_and_lin_matches_formula():
    a_re, a_im, b = hippo_diagonal_init(8, "legs")
    assert np.all(a_re == -0.5) and np.all(a_im > 0) and np.all(np.diff(a_im) > 0)
    assert np.all(np.abs(b) > 0)
    l_re, l_im, _ = hippo_diagonal_init(4, "lin")
    assert np.allclose(l_im, np.pi * np.arange(4)) and np.all(l_re == -0.5)


def test_factorised_kernel_equals_naive_vandermonde():
    torch.manual_seed(0)
    conv = S4DConv(channels=6, state=16, bidirectional=True)
    for length in (1, 37, 1000):
        assert torch.allclose(conv.kernel(length).double(), _naive_kernel(conv, length), atol=1e-4, rtol=1e-4)


def test_bidirectional_conv_matches_direct_sum():
    torch.manual_seed(1)
    conv = S4DConv(channels=3, state=8, bidirectional=True)
    u = torch.randn(2, 20, 3)  # channels-last (B, L, H)
    k = conv.kernel(20).double()
    ud = u.double().transpose(1, 2)
    expected = torch.zeros_like(ud)
    for t in range(20):
        for s in range(20):
            if s <= t:
                expected[..., t] += k[0, :, t - s] * ud[..., s]
            else:
                expected[..., t] += k[1, :, s - t - 1] * ud[..., s]
    expected += ud * conv.D.double()[:, None]
    assert torch.allclose(conv(u).double().transpose(1, 2), expected, atol=1e-4)


def test_grad_sampler_matches_per_example_autograd():
    torch.manual_seed(2)
    conv = S4DConv(channels=4, state=8, bidirectional=True)
    u, g = torch.randn(3, 50, 4), torch.randn(3, 50, 4)
    per_sample = s4d_grad_sample(conv, [u], g)
    for b in range(3):
        conv.zero_grad()
        (conv(u[b : b + 1]) * g[b : b + 1]).sum().backward()
        for p in conv.parameters():
            assert torch.allclose(per_sample[p][b], p.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("bidirectional,length", [(True, 300), (False, 257), (True, 1)])
def test_closed_form_kernel_vjp_matches_float64_autograd(bidirectional, length):
    """kernel_vjp (the per-sample kernel-parameter gradients DP-SGD uses) against autograd of the naive
    Vandermonde kernel in float64, per sample."""
    torch.manual_seed(5)
    conv = S4DConv(channels=6, state=16, bidirectional=bidirectional)
    with torch.no_grad():
        conv.A_imag.mul_(3.0)  # faster-rotating modes than the init, so that phase errors would show
    k = 2 if bidirectional else 1
    dk = torch.randn(3, k, 6, length)
    got = kernel_vjp(conv, dk)
    params = [p.detach().double().requires_grad_() for p in (conv.log_dt, conv.log_A_real, conv.A_imag, conv.C)]

    def kernel64():
        dt = torch.exp(params[0])
        a = torch.complex(-torch.exp(params[1]), params[2])
        dta = a * dt[:, None]
        w = torch.view_as_complex(params[3]) * (torch.exp(dta) - 1) / a
        return 2 * torch.einsum("khn,hnl->khl", w, torch.exp(dta[..., None] * torch.arange(length))).real

    ps32 = [conv.log_dt, conv.log_A_real, conv.A_imag, conv.C]
    autograd32 = torch.autograd.grad(conv.kernel(length), ps32, grad_outputs=dk, is_grads_batched=True)
    for b in range(3):
        expected = torch.autograd.grad(kernel64(), params, grad_outputs=dk[b].double())
        for e, g, a32 in zip(expected, got, autograd32, strict=True):
            assert g.shape[1:] == e.shape and g.dtype == torch.float32
            err = float((g[b].double() - e).norm() / e.norm())
            err32 = float((a32[b].double() - e).norm() / e.norm())  # what float32 autograd itself achieves
            assert err < 1e-3 and err <= 3 * err32 + 1e-6, (b, e.shape, err, err32)


def test_cached_kernels_give_same_output_and_are_dropped():
    torch.manual_seed(3)
    layer = S4Layer(channels=8, state=8)
    x = torch.randn(2, 64, 8)
    with torch.no_grad():
        ref = layer(x)
        with cached_kernels(layer, 64):
            assert layer.conv._cached_kf is not None
            cached = layer(x)
    assert layer.conv._cached_kf is None
    assert torch.allclose(ref, cached, atol=1e-6)
    assert "conv._cached_kf" not in layer.state_dict()


def test_fft_conv_gradients_match_autograd_of_plain_fft():
    from sssd.s4 import FFTConv

    torch.manual_seed(4)
    u = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FFTConv.apply, (u, k))
    ref = torch.fft.irfft(torch.fft.rfft(u, n=32) * torch.fft.rfft(k), n=32)[..., :16]
    assert torch.allclose(FFTConv.apply(u, k), ref)


def test_grad_sampler_on_empty_batch():
    conv = S4DConv(channels=4, state=8)
    out = s4d_grad_sample(conv, [torch.zeros(0, 30, 4)], torch.zeros(0, 30, 4))
    assert {tuple(v.shape) for v in out.values()} == {(0, *p.shape) for p in conv.parameters()}
