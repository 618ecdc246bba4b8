import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.distill._loss import kd_loss_from_log_probs, kd_token_parts, teacher_log_probs
from trainables.distill._topk import (
    decode_topk,
    encode_topk,
    id_dtype,
    sparse_kd_from_log_probs,
    sparse_kd_token_parts,
    sparse_teacher_log_probs,
    truncate_topk,
)

FP16_REL = 2.0**-11  # float16's unit roundoff: relative error of round-to-nearest


def _exact_sparse(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 top-k targets with no codec: ids, and log_p (k+1) with the tail as a logsumexp."""
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    sorted_lp, order = log_p.sort(dim=-1, descending=True, stable=True)
    tail = torch.logsumexp(sorted_lp[..., k:], dim=-1, keepdim=True)  # -inf when k == V
    return order[..., :k], torch.cat([sorted_lp[..., :k], tail], dim=-1)


def _reference_values(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 ids (stable descending, lower id first on ties) and top-k log-probs + log tail."""
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    log_p = z - (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))
    order = np.argsort(-z, axis=-1, kind="stable")
    sorted_lp = np.take_along_axis(log_p, order, axis=-1)
    with np.errstate(divide="ignore"):
        tail = np.log(np.exp(sorted_lp[..., k:]).sum(axis=-1, keepdims=True))
    return order[..., :k], np.concatenate([sorted_lp[..., :k], tail], axis=-1)


# --- the codec ---------------------------------------------------------------------------


def test_id_dtype_is_the_smallest_that_fits():
    assert id_dtype(200) == np.uint8 and id_dtype(256) == np.uint8
    assert id_dtype(257) == np.uint16 and id_dtype(32768) == np.uint16
    assert id_dtype(65536) == np.uint16 and id_dtype(65537) == np.int32
    assert id_dtype(70000) == np.int32


def test_hand_computed_encoding():
    # p = [1/2, 1/4, 1/8, 1/8], k = 2: ids [0, 1], values [ln 1/2, ln 1/4], tail ln(1/8 + 1/8).
    logits = np.log(np.array([[0.5, 0.25, 0.125, 0.125]], np.float32)) + 3.0  # shift-invariant
    enc = encode_topk(logits, 2, "fp16")
    assert enc["ids"].tolist() == [[0, 1]] and enc["ids"].dtype == np.uint8
    expected = np.float16([math.log(0.5), math.log(0.25), math.log(0.25)])
    np.testing.assert_array_equal(enc["values"][0], expected)  # the nearest float16s
    ids, log_p = decode_topk(enc["ids"], values=enc["values"])
    assert ids.dtype == torch.int64 and log_p.dtype == torch.float32
    np.testing.assert_allclose(log_p[0].exp().numpy(), [0.5, 0.25, 0.25], atol=1e-3)


def test_decode_takes_read_only_arrays_quietly():
    enc = encode_topk(
        np.random.default_rng(9).standard_normal((4, 300)).astype(np.float32), 3, "int8"
    )
    for array in enc.values():
        array.setflags(write=False)  # as rows of a read-only memory-mapped bank
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, log_p = decode_topk(**enc)
    assert ids.shape == (4, 3) and log_p.shape == (4, 4)


def test_ties_take_the_lower_id_first_and_are_consistent_across_k():
    enc = encode_topk(np.array([[0.0, 1.0, 1.0, 1.0, 0.0]], np.float32), 2, "fp16")
    assert enc["ids"].tolist() == [[1, 2]]
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # many ties
    wide = decode_topk(**encode_topk(logits, 12, "fp16"))
    narrow_ids, _ = truncate_topk(*wide, 5)
    np.testing.assert_array_equal(narrow_ids.numpy(), encode_topk(logits, 5, "fp16")["ids"])
    np.testing.assert_array_equal(
        encode_topk(logits, 12, "int8")["ids"], _reference_values(logits, 12)[0]
    )


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("k", [1, 8, 200])
def test_round_trip_is_normalised_and_within_the_quantisation_bound(precision, k):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((3, 5, 200)) * 4).astype(np.float32)
    enc = encode_topk(logits, k, precision)
    ref_ids, ref = _reference_values(logits, k)
    ids, log_p = decode_topk(**enc)
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    assert ids.shape == (3, 5, k) and log_p.shape == (3, 5, k + 1)
    np.testing.assert_allclose(torch.logsumexp(log_p, -1).numpy(), 0.0, atol=1e-5)
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(log_p.numpy()), finite)  # k == V: the tail stays -inf
    assert finite[..., :k].all() and (finite[..., k].all() == (k < 200))
    err = np.abs(np.where(finite, log_p.numpy(), 0.0) - np.where(finite, ref, 0.0))
    # Decoding adds e_i (the rounding of bucket i) minus the renormalisation shift
    # logsumexp(v + e), which lies within [min e, max e]; so |error_i| <= 2 max |e|. fp16 rounds
    # each value to |e| <= |v| * 2^-11; int8 rounds each difference to |e| <= scale / 2.
    if precision == "fp16":
        bound = 2 * FP16_REL * np.abs(np.where(finite, ref, 0.0)).max(-1, keepdims=True)
    else:
        bound = enc["scale"].astype(np.float64)[..., None]
    assert (err <= bound + 1e-5).all(), (err - bound).max()


def test_int8_marks_an_empty_tail_with_code_255_and_decodes_it_to_minus_inf():
    # A masked vocabulary (-inf logits) beyond the top-k leaves an empty tail: probability 0.
    # Second row: four equal buckets (the tail's two tokens hold 1/4), a flat row of differences.
    half = math.log(0.5)
    logits = np.array([[2.0, 0.5, -1.0, -np.inf, -np.inf], [0.0, 0.0, 0.0, half, half]], np.float32)
    enc = encode_topk(logits, 3, "int8")
    assert enc["codes"][0, 3] == 255 and enc["codes"][1, 3] < 255
    assert enc["codes"][1].tolist() == [0, 0, 0, 0]  # the scale's floor: no 0 / 0
    _, log_p = decode_topk(**enc)
    assert log_p[0, 3] == float("-inf") and torch.isfinite(log_p[1]).all()
    np.testing.assert_allclose(log_p[1].exp().numpy(), [0.25] * 4, atol=1e-3)


def test_fp16_keeps_a_vanishing_but_nonzero_mass_finite():
    # ln p = -1e5 is below float16's range: stored as its most negative finite value, not -inf,
    # so a top-k entry stays a token. The tail (a sum of exp(-2e5)) underflows in float64 itself.
    enc = encode_topk(np.array([[0.0, -1e5, -2e5]], np.float32), 2, "fp16")
    assert enc["values"][0, 1:].tolist() == [-65504.0, float("-inf")]


def test_int8_tail_heavier_than_the_top_token():
    # k = 1 of a flat 100-way row: the tail holds 99 % of the mass, so v_tail > v_0.
    enc = encode_topk(np.zeros((1, 100), np.float32), 1, "int8")
    _, log_p = decode_topk(**enc)
    np.testing.assert_allclose(log_p[0].exp().numpy(), [0.01, 0.99], rtol=2e-3)


@pytest.mark.parametrize(
    ("vocab", "dtype"), [(200, np.uint8), (32768, np.uint16), (70000, np.int32)]
)
def test_ids_use_the_small_dtype_and_decode_exactly(vocab, dtype):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, vocab)).astype(np.float32)
    logits[0, vocab - 1] = 50.0  # the largest id is the top-1
    enc = encode_topk(logits, 4, "int8")
    assert enc["ids"].dtype == dtype and enc["ids"][0, 0] == vocab - 1
    ids, _ = decode_topk(**enc)
    np.testing.assert_array_equal(ids.numpy(), _reference_values(logits, 4)[0])
    if dtype == np.uint16:  # torch's own uint16 tensors also decode
        torch_ids, _ = decode_topk(
            torch.from_numpy(enc["ids"]), codes=enc["codes"], scale=enc["scale"]
        )
        assert torch.equal(torch_ids, ids)


def test_bytes_per_row_at_32k_vocab_and_k_32():
    logits = np.random.default_rng(3).standard_normal((2, 3, 32768)).astype(np.float32)
    rows = 6
    int8 = encode_topk(logits, 32, "int8")
    assert sum(a.nbytes for a in int8.values()) / rows == 2 * 32 + 33 + 2 == 99
    fp16 = encode_topk(logits, 32, "fp16")
    assert sum(a.nbytes for a in fp16.values()) / rows == 2 * 32 + 2 * 33 == 130


def test_truncate_equals_encoding_at_the_smaller_k():
    gen = torch.Generator().manual_seed(4)
    t = torch.randn(6, 50, generator=gen) * 3
    ids, log_p = truncate_topk(*_exact_sparse(t, 20), 5)
    ref_ids, ref_lp = _exact_sparse(t, 5)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(log_p, ref_lp, atol=1e-5, rtol=0)
    ids, log_p = truncate_topk(*decode_topk(**encode_topk(t.numpy(), 20, "fp16")), 5)
    direct_ids, direct_lp = decode_topk(**encode_topk(t.numpy(), 5, "fp16"))
    assert torch.equal(ids, direct_ids)
    torch.testing.assert_close(log_p, direct_lp, atol=2e-2, rtol=0)
    torch.testing.assert_close(truncate_topk(*_exact_sparse(t, 50), 50)[1], _exact_sparse(t, 50)[1])


def test_bad_arguments_raise():
    logits = np.zeros((2, 4), np.float32)
    for k in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            encode_topk(logits, k, "fp16")
    with pytest.raises(ValueError, match="precision"):
        encode_topk(logits, 2, "int4")
    with pytest.raises(ValueError, match="NaN"):
        encode_topk(np.full((1, 4), np.nan, np.float32), 2, "fp16")
    with pytest.raises(ValueError, match="finite entry"):
        encode_topk(np.full((1, 4), -np.inf, np.float32), 2, "fp16")
    enc = encode_topk(logits, 2, "int8")
    with pytest.raises(ValueError, match="either values"):
        decode_topk(
            enc["ids"], values=np.zeros((2, 3), np.float16), codes=enc["codes"], scale=enc["scale"]
        )
    with pytest.raises(ValueError, match="either values"):
        decode_topk(enc["ids"], codes=enc["codes"])
    with pytest.raises(ValueError, match="k must be"):
        truncate_topk(torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 4), 4)


# --- the loss ----------------------------------------------------------------------------


def test_hand_computed_sparse_hinton_kd_at_t_1_and_2():
    # Teacher p = [1/2, 1/4, 1/8, 1/8], k = 2: buckets [1/2, 1/4, 1/4].
    # Student q = [0.1, 0.2, 0.3, 0.4], label 1: CE = -ln 0.2; buckets at T = 1: [0.1, 0.2, 0.7].
    ids = torch.tensor([[0, 1]])
    log_p = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]])
    s = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    y = torch.tensor([1])

    def loss(T):
        return sparse_kd_from_log_probs(
            s, ids, sparse_teacher_log_probs(log_p, T), y, temperature=T, alpha=0.5
        )

    one = loss(1.0)
    kl1 = 0.5 * math.log(0.5 / 0.1) + 0.25 * math.log(0.25 / 0.2) + 0.25 * math.log(0.25 / 0.7)
    assert one.ce.item() == pytest.approx(-math.log(0.2), abs=1e-6)
    assert one.kd.item() == pytest.approx(kl1, abs=1e-6)
    assert one.total.item() == pytest.approx(0.5 * -math.log(0.2) + 0.5 * kl1, abs=1e-6)
    # T = 2: the teacher's buckets tempered as p_b^(1/2), renormalised; the student's tokens as
    # q_j^(1/2) / Z, the tail bucket summing its two tokens; kd = T^2 KL.
    pt = [math.sqrt(0.5), math.sqrt(0.25), math.sqrt(0.25)]
    pt = [x / sum(pt) for x in pt]
    z = math.sqrt(0.1) + math.sqrt(0.2) + math.sqrt(0.3) + math.sqrt(0.4)
    qs = [math.sqrt(0.1) / z, math.sqrt(0.2) / z, (math.sqrt(0.3) + math.sqrt(0.4)) / z]
    kl2 = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, qs, strict=True))
    assert loss(2.0).kd.item() == pytest.approx(4.0 * kl2, abs=1e-6)


def _dense_and_sparse(s, t, y, T, alpha, form):
    s_dense, s_sparse = s.clone().requires_grad_(), s.clone().requires_grad_()
    dense = kd_loss_from_log_probs(
        s_dense, teacher_log_probs(t, T, form), y, temperature=T, alpha=alpha, form=form
    )
    ids, log_p = _exact_sparse(t, t.shape[-1])
    sparse = sparse_kd_from_log_probs(
        s_sparse,
        ids,
        sparse_teacher_log_probs(log_p, T, form),
        y,
        temperature=T,
        alpha=alpha,
        form=form,
    )
    dense.total.sum().backward()
    sparse.total.sum().backward()
    return dense, sparse, s_dense.grad, s_sparse.grad


@pytest.mark.parametrize(
    ("form", "T"),
    [("hinton", 0.5), ("hinton", 1.0), ("hinton", 3.0), ("progressive", 0.5),
     ("progressive", 1.0), ("progressive", 3.0), ("progressive", 1e-25),
     ("progressive", 1e-40)],
)  # fmt: skip
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_k_equal_to_vocab_matches_the_dense_loss(form, T, alpha):
    gen = torch.Generator().manual_seed(5)
    s, t = torch.randn(9, 7, generator=gen) * 3, torch.randn(9, 7, generator=gen) * 3
    y = torch.randint(0, 7, (9,), generator=gen)
    dense, sparse, g_dense, g_sparse = _dense_and_sparse(s, t, y, T, alpha, form)
    for d, sp in zip(dense, sparse, strict=True):
        torch.testing.assert_close(sp, d, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(g_sparse).all()
    torch.testing.assert_close(g_sparse, g_dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["hinton", "progressive"])
@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
def test_k_equal_to_vocab_matches_dense_per_token(form, T):
    gen = torch.Generator().manual_seed(6)
    s, t = torch.randn(3, 5, 11, generator=gen) * 2, torch.randn(3, 5, 11, generator=gen) * 2
    y = torch.randint(0, 11, (3, 5), generator=gen)
    y[0, 1:3] = -100
    y[2] = -100  # a sequence with no counted token
    s_dense, s_sparse = s.clone().requires_grad_(), s.clone().requires_grad_()
    dense, dense_counts = kd_token_parts(
        s_dense, teacher_log_probs(t, T, form), y, temperature=T, alpha=0.3, form=form
    )
    ids, log_p = _exact_sparse(t, 11)
    sparse, counts = sparse_kd_token_parts(
        s_sparse,
        ids,
        sparse_teacher_log_probs(log_p, T, form),
        y,
        temperature=T,
        alpha=0.3,
        form=form,
    )
    assert counts.dtype == torch.float32 and torch.equal(counts, dense_counts)
    assert counts.tolist() == [3.0, 5.0, 0.0] and sparse.total[2] == 0
    for d, sp in zip(dense, sparse, strict=True):
        torch.testing.assert_close(sp, d, atol=1e-5, rtol=1e-5)
    dense.total.sum().backward()
    sparse.total.sum().backward()
    assert torch.isfinite(s_sparse.grad).all()
    torch.testing.assert_close(s_sparse.grad, s_dense.grad, atol=1e-5, rtol=1e-5)


def test_learned_temperature_gets_a_finite_gradient_with_an_empty_tail():
    gen = torch.Generator().manual_seed(7)
    s, t = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    y = torch.randint(0, 6, (4,), generator=gen)
    ids, log_p = _exact_sparse(t, 6)  # tail = -inf
    T_dense, T_sparse = torch.tensor(2.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    dense = kd_loss_from_log_probs(
        s, teacher_log_probs(t, T_dense), y, temperature=T_dense, alpha=0.0
    )
    sparse = sparse_kd_from_log_probs(
        s, ids, sparse_teacher_log_probs(log_p, T_sparse), y, temperature=T_sparse, alpha=0.0
    )
    dense.total.sum().backward()
    sparse.total.sum().backward()
    assert torch.isfinite(T_sparse.grad)
    torch.testing.assert_close(T_sparse.grad, T_dense.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_top_k_kl_at_t_1_is_the_coarsened_kl_and_at_most_the_dense_one(seed):
    gen = torch.Generator().manual_seed(seed)
    s, t = torch.randn(8, 30, generator=gen) * 2, torch.randn(8, 30, generator=gen) * 2
    y = torch.randint(0, 30, (8,), generator=gen)
    k = 1 + seed * 3
    ids, log_p = _exact_sparse(t, k)
    sparse = sparse_kd_from_log_probs(
        s, ids, sparse_teacher_log_probs(log_p, 1.0), y, temperature=1.0, alpha=0.0
    )

    # Float64 reference: both distributions coarsened to the teacher's top-k ids + one bucket.
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(t.double().numpy()), softmax(s.double().numpy())
    top = ids.numpy()
    in_top = np.zeros_like(p, bool)
    np.put_along_axis(in_top, top, True, axis=1)
    pb = np.concatenate([np.take_along_axis(p, top, 1), (p * ~in_top).sum(1, keepdims=True)], 1)
    qb = np.concatenate([np.take_along_axis(q, top, 1), (q * ~in_top).sum(1, keepdims=True)], 1)
    coarse = (pb * np.log(pb / qb)).sum(1)
    dense = (p * np.log(p / q)).sum(1)
    np.testing.assert_allclose(sparse.kd.numpy(), coarse, rtol=1e-4, atol=1e-5)
    assert (sparse.kd.numpy() <= dense + 1e-5).all()  # data-processing inequality
    assert (coarse <= dense + 1e-12).all()


def test_bf16_student_logits_are_computed_in_float32():
    gen = torch.Generator().manual_seed(8)
    s, t = torch.randn(4, 10, generator=gen), torch.randn(4, 10, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    ids, log_p = _exact_sparse(t, 3)
    lp = sparse_teacher_log_probs(log_p, 2.0)
    half = sparse_kd_from_log_probs(s.bfloat16(), ids, lp, y, temperature=2.0, alpha=0.3)
    full = sparse_kd_from_log_probs(s.bfloat16().float(), ids, lp, y, temperature=2.0, alpha=0.3)
    assert half.total.dtype == torch.float32
    torch.testing.assert_close(half.total, full.total)


def test_tempered_teacher_buckets_with_a_tail_follow_the_stated_approximation():
    # Buckets p = [0.6, 0.3, 0.1] at T = 2: p_b^(1/2) renormalised, the tail as one pseudo-token.
    log_p = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    out = sparse_teacher_log_probs(log_p, 2.0).exp()[0].tolist()
    root = [math.sqrt(0.6), math.sqrt(0.3), math.sqrt(0.1)]
    assert out == pytest.approx([x / sum(root) for x in root], abs=1e-6)
