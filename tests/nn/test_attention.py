"""packed_attention: every backend equals plain softmax attention computed clip by clip, and never crosses clips."""

import pytest
import torch

from tubelet.nn import BACKENDS, available_backends, packed_attention, resolve_backend

LENGTHS = (5, 17, 1)  # a short clip, a long one, and a lone particle
HEADS, HEAD_DIM = 2, 16  # 16: the smallest head FlexAttention compiles for


def cu_seqlens_of(lengths) -> torch.Tensor:
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu


def qkv(*, seed=0, dtype=torch.float32, device="cpu"):
    """Three (N, heads, head_dim) leaf tensors over the clips of LENGTHS."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(LENGTHS)
    return [
        torch.randn(n, HEADS, HEAD_DIM, generator=gen).to(device=device, dtype=dtype).requires_grad_() for _ in range(3)
    ]


def reference_attention(q, k, v, lengths):
    """softmax(q k^T / sqrt(d)) v for each clip in turn, in float32: (N, heads, head_dim)."""
    outs, start = [], 0
    for n in lengths:
        qi, ki, vi = (x[start : start + n].float().transpose(0, 1) for x in (q, k, v))  # (h, n, d)
        weights = torch.softmax(qi @ ki.transpose(1, 2) / HEAD_DIM**0.5, dim=-1)  # (h, n, n)
        outs.append((weights @ vi).transpose(0, 1))  # (n, h, d)
        start += n
    return torch.cat(outs)


def check_against_reference(backend, *, dtype, device, fwd_tol, grad_tol):
    cu = cu_seqlens_of(LENGTHS).to(device)
    q, k, v = qkv(dtype=dtype, device=device)
    upstream = torch.randn(sum(LENGTHS), HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(1)).to(device)

    out = packed_attention(q, k, v, cu, max(LENGTHS), backend=backend)
    (out.float() * upstream).sum().backward()
    grads = [x.grad.float() for x in (q, k, v)]

    ref_inputs = [x.detach().float().requires_grad_() for x in (q, k, v)]  # the same (rounded) inputs
    ref = reference_attention(*ref_inputs, LENGTHS)
    (ref * upstream).sum().backward()

    assert out.shape == (sum(LENGTHS), HEADS, HEAD_DIM)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=fwd_tol, rtol=fwd_tol)
    for name, grad, ref_input in zip("qkv", grads, ref_inputs):
        torch.testing.assert_close(grad, ref_input.grad, atol=grad_tol, rtol=grad_tol, msg=f"grad of {name}")


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_cpu_backend_matches_per_clip_reference(backend):
    check_against_reference(backend, dtype=torch.float32, device="cpu", fwd_tol=1e-5, grad_tol=1e-4)


def test_cpu_backends_are_sdpa_and_dense():
    assert set(available_backends("cpu")) == {"sdpa", "dense"}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["varlen", "flash", "flex"])
def test_cuda_backend_matches_per_clip_reference(backend, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} is not available in this installation")
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    check_against_reference(backend, dtype=dtype, device="cuda", fwd_tol=tol, grad_tol=2 * tol)


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_attention_never_crosses_clips(backend):
    cu = cu_seqlens_of(LENGTHS)
    q, k, v = (x.detach() for x in qkv())
    clip1 = slice(LENGTHS[0], LENGTHS[0] + LENGTHS[1])
    k2, v2 = k.clone(), v.clone()
    k2[clip1] = 10 * torch.randn_like(k2[clip1])
    v2[clip1] = v2[clip1] + 100.0

    before = packed_attention(q, k, v, cu, max(LENGTHS), backend=backend)
    after = packed_attention(q, k2, v2, cu, max(LENGTHS), backend=backend)

    assert torch.equal(after[: LENGTHS[0]], before[: LENGTHS[0]])
    assert torch.equal(after[clip1.stop :], before[clip1.stop :])
    assert not torch.allclose(after[clip1], before[clip1])  # the perturbation does reach its own clip


def test_lone_particle_attends_only_to_itself():
    cu = cu_seqlens_of(LENGTHS)
    q, k, v = (x.detach() for x in qkv())

    out = packed_attention(q, k, v, cu, max(LENGTHS), backend="sdpa")

    torch.testing.assert_close(out[-1], v[-1], atol=1e-6, rtol=1e-6)


def test_auto_resolves_to_sdpa_on_cpu():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert resolve_backend("dense", "cpu") == "dense"


@pytest.mark.parametrize("name", ["flash_attention_2", "SDPA", "", "math"])
def test_unknown_backend_raises_value_error(name):
    assert name not in BACKENDS
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend(name, "cpu")
    q, k, v = (x.detach() for x in qkv())
    with pytest.raises(ValueError, match="unknown attention backend"):
        packed_attention(q, k, v, cu_seqlens_of(LENGTHS), max(LENGTHS), backend=name)


def test_cuda_only_backend_on_cpu_raises_value_error():
    with pytest.raises(ValueError, match="not available"):
        resolve_backend("flex", "cpu")


@pytest.mark.parametrize("backend", ["sdpa", "dense"])
def test_clips_of_equal_length_match_the_reference(backend):
    # sdpa batches equal-length clips into one call: it must still keep them apart.
    lengths = [6, 6, 6]
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(18, HEADS, HEAD_DIM, generator=gen) for _ in range(3))
    out = packed_attention(q, k, v, cu_seqlens_of(lengths), 6, backend=backend)
    torch.testing.assert_close(out, reference_attention(q, k, v, lengths), atol=1e-5, rtol=1e-5)


def test_traceable_clip_ids_match_clip_ids():
    from tubelet.nn.attention import clip_ids, clip_ids_traceable

    cu = torch.tensor([0, 1, 1, 5, 12], dtype=torch.int32)  # an empty clip too
    assert clip_ids_traceable(cu, 12).tolist() == clip_ids(cu, 12).tolist() == [0, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]
