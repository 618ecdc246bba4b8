"""Sparse ("top-k") teacher outputs: a codec for the bank and the KD loss over sparse targets.

A row of teacher logits over ``V`` classes is kept as its ``k`` most probable ids, their
log-probabilities and one more bucket, the log of the remaining mass (the "tail"), as in offline
top-k KD (Megatron-core's offline logits KD, DistillKit's compressed sparse logits). The KD term is
then a proper divergence between two distributions over the same ``k + 1`` buckets. The codec is
NumPy (the bank writer's side); decoding and the loss are PyTorch (the student's side).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainables.distill._loss import FLOAT64_BELOW, KDLoss, _check_form, per_sequence_means

__all__ = [
    "decode_topk",
    "encode_topk",
    "id_dtype",
    "pack_topk",
    "sparse_kd_from_log_probs",
    "sparse_kd_token_parts",
    "sparse_teacher_log_probs",
    "topk_of_logits",
    "truncate_topk",
]

PRECISIONS = ("fp16", "int8")
INT8_MAX_CODE = 254  # codes 0..254 are quantised levels; 255 is "probability 0" (-inf)
INT8_MIN_SCALE = 1e-4  # a flat row (all differences 0) must not give a zero scale
MASKED = -1e30  # finite stand-in for "not this bucket": keeps gradients finite where -inf is NaN
_BLOCK = 1 << 22  # elements of logits encoded at a time: bounds the float64 working set (~32 MiB)


def id_dtype(vocab: int) -> np.dtype:
    """The smallest dtype holding ids ``0..vocab-1``: uint8, uint16, else int32 (1, 2, 4 bytes)."""
    if vocab < 1:
        raise ValueError(f"vocab must be >= 1, got {vocab}")
    return np.dtype(np.uint8 if vocab <= 256 else np.uint16 if vocab <= 65536 else np.int32)


def _encode_rows(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, values)`` for rows ``(R, V)``: the top-k ids by descending probability (ties: the
    lower id first) and their k log-probabilities followed by the log tail mass, in float64."""
    vocab = z.shape[1]
    # The k-th largest value, then every id above it and the lowest ids equal to it: the same set
    # as a stable descending sort's first k, in O(V) per row.
    kth = np.partition(z, vocab - k, axis=1)[:, vocab - k, None]
    above, tied = z > kth, z == kth
    need = k - above.sum(axis=1, keepdims=True)
    keep = above | (tied & (np.cumsum(tied, axis=1) <= need))
    ids = np.nonzero(keep)[1].reshape(-1, k)  # ascending ids within each row
    top = np.take_along_axis(z, ids, axis=1).astype(np.float64)
    order = np.argsort(-top, axis=1, kind="stable")  # stable: ties keep the lower id first
    ids, top = np.take_along_axis(ids, order, 1), np.take_along_axis(top, order, 1)
    peak = top[:, :1]  # the row's largest logit
    if not np.isfinite(peak).all():
        raise ValueError("every row of logits needs a finite entry")
    # One float64 pass of exp(z - peak). The tail is the sum of its own terms, not
    # 1 - sum(top), which cancels to noise when the top-k holds nearly all the mass; it is
    # -inf when empty or below exp(-745) of the peak (float64 underflow).
    weights = np.exp(z - peak)
    log_total = np.log(weights.sum(axis=1, keepdims=True))
    np.putmask(weights, keep, 0.0)
    with np.errstate(divide="ignore"):
        tail = np.log(weights.sum(axis=1, keepdims=True))
    return ids, np.concatenate([top - peak, tail], axis=1) - log_total


def encode_topk(logits: np.ndarray, k: int, precision: str) -> dict[str, np.ndarray]:
    """Encode teacher logits ``(..., V)`` as their top-k plus a tail bucket, for the bank.

    Returns ``ids (..., k)`` of :func:`id_dtype` ``(V)`` and, for ``precision="fp16"``,
    ``values (..., k+1)`` float16: the k log-probabilities (descending) then the log tail mass
    (``-inf`` when ``k == V`` or the tail underflows). For ``"int8"``, ``codes (..., k+1)`` uint8
    and ``scale (...)`` float16: ``code_i = round((m - v_i) / scale)`` in ``0..254`` with ``m`` the
    row's largest bucket (the top token's, or the tail's when that is heavier) and ``scale`` the
    largest finite difference over 254 (at least 1e-4); code 255 is probability 0. Only the
    differences are kept because decoding renormalises the buckets (:func:`decode_topk`), so the
    error per log-probability is at most ``scale``: ``scale / 2`` of rounding plus at most as
    much of renormalisation shift. Bytes per row at ``V = 32768, k = 32``: 130 (fp16), 99 (int8).
    The log-softmax is done in float64, ``2**22`` logits at a time (~0.5 ms per row at 32k).
    """
    logits = np.asarray(logits)
    vocab = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= vocab:
        raise ValueError(f"k must be an integer in [1, {vocab}] (the vocabulary), got {k!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError("logits must not contain NaN or +inf")
    lead, rows = logits.shape[:-1], logits.reshape(-1, vocab)
    step = max(1, _BLOCK // vocab)
    parts = [_encode_rows(rows[i : i + step], int(k)) for i in range(0, max(len(rows), 1), step)]
    ids = np.concatenate([p[0] for p in parts]).reshape(*lead, k)
    values = np.concatenate([p[1] for p in parts]).reshape(*lead, k + 1)
    return pack_topk(ids, values, vocab, precision)


def pack_topk(
    ids: np.ndarray, values: np.ndarray, vocab: int, precision: str
) -> dict[str, np.ndarray]:
    """Store top-k ``ids (..., k)`` and the k + 1 bucket log-probabilities ``values`` (top-k
    descending, then the log tail) as :func:`encode_topk` describes (``vocab`` sets the ids'
    type)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    ids = np.asarray(ids).astype(id_dtype(vocab))
    values = np.asarray(values, dtype=np.float64)
    if precision == "fp16":
        low = float(np.finfo(np.float16).min)  # a finite log-prob stays finite (nonzero mass)
        values = np.where(np.isfinite(values), np.maximum(values, low), values)
        return {"ids": ids, "values": values.astype(np.float16)}
    finite = np.isfinite(values)
    diff = np.where(finite, values.max(axis=-1, keepdims=True) - values, 0.0)
    scale = np.clip(diff.max(axis=-1) / INT8_MAX_CODE, INT8_MIN_SCALE, np.finfo(np.float16).max)
    scale = scale.astype(np.float16)  # quantise with the stored scale, so decode matches exactly
    codes = np.clip(np.rint(diff / scale[..., None].astype(np.float64)), 0, INT8_MAX_CODE)
    codes = np.where(finite, codes, INT8_MAX_CODE + 1).astype(np.uint8)
    return {"ids": ids, "codes": codes, "scale": scale}


@torch.no_grad()
def topk_of_logits(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k of dense logits ``(..., V)`` on their own device (float32): ``ids (..., k)``
    int64 and ``log_p (..., k+1)``, the k log-probabilities (descending) then the log tail
    mass, summed from the tail's own terms (no cancellation). Ties in the top-k are broken as
    ``torch.topk`` does. The bank's builder uses this on the teacher's GPU (only the k + 1
    values per row cross to the host); a student uses it for ``distill.top_k`` on a dense
    bank."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    top, ids = log_p.topk(k, dim=-1)
    tail = torch.logsumexp(log_p.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
    return ids, torch.cat([top, tail], dim=-1)


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        # A copy: the bank's rows may be a read-only memory map, which torch warns about sharing.
        x = torch.from_numpy(x.astype(np.int32 if x.dtype == np.uint16 else x.dtype))
    return x if device is None else x.to(device)


def decode_topk(
    ids: np.ndarray | torch.Tensor,
    values: np.ndarray | torch.Tensor | None = None,
    codes: np.ndarray | torch.Tensor | None = None,
    scale: np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode :func:`encode_topk`'s arrays (NumPy arrays or tensors, on any device: the result is
    on ``ids``'s device) into ``ids (..., k)`` int64 and normalised ``log_p (..., k+1)`` float32.

    Pass ``values`` (fp16) or ``codes`` and ``scale`` (int8). Both are renormalised over the
    k + 1 buckets, so ``logsumexp(log_p, -1) == 0`` to float32 rounding. uint16 ids are best
    passed as the NumPy array the bank stores (torch's uint16 support is partial).
    """
    if (values is None) == (codes is None) or (codes is None) != (scale is None):
        raise ValueError("pass either values (fp16) or both codes and scale (int8)")
    ids_t = _as_tensor(ids)
    device = ids_t.device
    ids_t = ids_t.to(torch.int64)
    if values is not None:
        raw = _as_tensor(values, device).float()
    else:
        codes_t, scale_t = _as_tensor(codes, device), _as_tensor(scale, device).float()
        raw = -codes_t.float() * scale_t.unsqueeze(-1)
        raw = raw.masked_fill(codes_t == INT8_MAX_CODE + 1, float("-inf"))
    return ids_t, raw - torch.logsumexp(raw, dim=-1, keepdim=True)


def truncate_topk(
    ids: torch.Tensor, log_p: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first ``k`` of the ``K`` stored (descending) buckets and merge the rest into the
    tail: ``(ids (..., k), log_p (..., k+1))``. A student can search ``k <= K`` from one bank."""
    stored = ids.shape[-1]
    if not 1 <= k <= stored:
        raise ValueError(f"k must be in [1, {stored}] (the stored k), got {k}")
    tail = torch.logsumexp(log_p[..., k:], dim=-1, keepdim=True)
    return ids[..., :k], torch.cat([log_p[..., :k], tail], dim=-1)


def sparse_teacher_log_probs(
    log_p: torch.Tensor, temperature: float | torch.Tensor, form: str = "hinton"
) -> torch.Tensor:
    """``log_softmax(log_p / T)`` over the k + 1 buckets (the tail as one pseudo-token), the
    teacher's side of the sparse KD loss; no gradient into ``log_p``.

    Since ``log_p = logits - logZ``, this is exactly ``log_softmax(logits / T)`` at every ``T``
    when the top-k covers the vocabulary (tail ``-inf``), and exact at ``T = 1`` otherwise. For
    ``T != 1`` with a tail, the tail's tempered weight ``sum_j p_j^(1/T)`` over its ``m = V - k``
    tokens needs the tail's shape, which the bank does not keep; ``P^(1/T)`` (``P`` its mass) is
    used instead. For ``T > 1`` this underestimates the weight by a factor in
    ``[m^(1/T - 1), 1]`` (1 for a one-token tail, the bound for a flat one); for ``T < 1`` it
    overestimates it by at most ``m^(1/T - 1)``. The error only moves the tail bucket's share,
    which is small when the top-k holds most of the mass, the regime top-k banks are built for;
    tempering the stored log-probabilities is all a top-k bank allows. ``-inf`` buckets stay
    probability 0, with no NaN in value or gradient (also for a tensor ``T`` that learns). The
    progressive form's tiny ``T`` is done in float64 as in :func:`teacher_log_probs`.
    """
    _check_form(form)
    log_p = log_p.detach()
    present = torch.isfinite(log_p)
    tiny = isinstance(temperature, torch.Tensor) or temperature < FLOAT64_BELOW
    wide = form == "progressive" and tiny
    safe = torch.where(present, log_p, 0.0).to(torch.float64 if wide else log_p.dtype)
    tempered = (safe / temperature).masked_fill(~present, float("-inf"))
    return F.log_softmax(tempered, dim=-1).to(log_p.dtype)


def sparse_kd_from_log_probs(
    student_logits: torch.Tensor,
    ids: torch.Tensor,
    log_p_teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
) -> KDLoss:
    """:func:`kd_loss_from_log_probs` against sparse targets, each part ``(N,)``.

    Args:
        student_logits: ``(N, V)``; computed in float32 whatever their dtype.
        ids: ``(N, k)`` int64, the teacher's top-k ids.
        log_p_teacher: ``(N, k+1)`` from :func:`sparse_teacher_log_probs` at the same
            ``temperature`` and ``form``.
        labels: ``(N,)`` class indices.

    The student's buckets are ``log q_i = log_softmax(s / T)[ids_i]`` and the tail
    ``log q_tail = logsumexp(s / T over the other ids) - logsumexp(s / T)`` (``T = 1`` for the
    progressive form, as in the dense loss). hinton: ``kd = T^2 sum_b p_b (log p_b - log q_b)``;
    progressive: ``kd = -sum_b p_b log q_b``; a bucket with ``p_b = 0`` adds exactly 0. By the
    data-processing inequality, at ``T = 1`` the hinton KL is at most the dense one.
    """
    s = student_logits.float()
    ce = F.cross_entropy(s, labels, reduction="none")
    z = s if form == "progressive" else s / temperature
    norm = torch.logsumexp(z, dim=-1, keepdim=True)
    # The top-k positions are masked to a finite MASKED, not -inf: at k == V the tail is then
    # finite (and has p = 0), so neither its value nor its gradient is NaN.
    rest = torch.logsumexp(z.scatter(-1, ids, MASKED), dim=-1, keepdim=True)
    log_q = torch.cat([z.gather(-1, ids), rest], dim=-1) - norm
    p = log_p_teacher.exp()
    if form == "progressive":
        kd = -(p * log_q).sum(dim=-1)
    else:
        # p = 0 buckets: a finite placeholder for log p (times p = 0) keeps gradients NaN-free.
        log_p = torch.where(p > 0, log_p_teacher, 0.0)
        kd = temperature**2 * (p * (log_p - log_q)).sum(dim=-1)
    return KDLoss(total=alpha * ce + (1.0 - alpha) * kd, ce=ce, kd=kd)


def sparse_kd_token_parts(
    student_logits: torch.Tensor,
    ids: torch.Tensor,
    log_p_teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    alpha: float,
    form: str = "hinton",
    ignore_index: int = -100,
) -> tuple[KDLoss, torch.Tensor]:
    """:func:`kd_token_parts` against sparse targets: ``student_logits (B, L, V)``,
    ``ids (B, L, k)``, ``log_p_teacher (B, L, k+1)``, ``targets (B, L)``. Returns each part's
    per-sequence mean over counted tokens ``(B,)`` and the float32 counts ``(B,)``; no host sync.
    """
    counted = targets != ignore_index
    vocab, k = student_logits.shape[-1], ids.shape[-1]
    per_token = sparse_kd_from_log_probs(
        student_logits.reshape(-1, vocab), ids.reshape(-1, k), log_p_teacher.reshape(-1, k + 1),
        targets.reshape(-1).masked_fill(~counted.reshape(-1), 0),
        temperature=temperature, alpha=alpha, form=form,
    )  # fmt: skip
    return per_sequence_means(per_token, counted)
