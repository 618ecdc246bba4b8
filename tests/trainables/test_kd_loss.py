import math

import numpy as np
import pytest
import torch

from trainables.distill import kd_loss


def _reference(s, t, y, T, alpha):
    """Hand-written float64 reference of alpha*CE + (1-alpha)*T^2*KL(p_t^T || p_s^T), batchmean."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ce = -np.mean(np.log(softmax(s)[np.arange(len(y)), y]))
    ps, pt = softmax(s / T), softmax(t / T)
    kl = np.sum(pt * (np.log(pt) - np.log(ps))) / len(y)  # summed over classes, mean over batch
    return alpha * ce + (1 - alpha) * T * T * kl, ce, T * T * kl


def test_two_class_example_by_hand():
    # One example, logits s = [0, 0], t = [ln 3, 0], label 0, T = 1, alpha = 0.5:
    # CE = ln 2; p_t = [3/4, 1/4], p_s = [1/2, 1/2]; KL = 3/4 ln(3/2) + 1/4 ln(1/2).
    loss = kd_loss(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0]),
        temperature=1.0, alpha=0.5,
    )  # fmt: skip
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert loss.ce.item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert loss.kd.item() == pytest.approx(kl, rel=1e-5)
    assert loss.total.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * kl, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_matches_float64_reference(temperature, alpha):
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 5, generator=gen) * 3, torch.randn(7, 5, generator=gen) * 3
    y = torch.randint(0, 5, (7,), generator=gen)
    loss = kd_loss(s, t, y, temperature=temperature, alpha=alpha)
    total, ce, kd = _reference(s.numpy(), t.numpy(), y.numpy(), temperature, alpha)
    assert loss.total.item() == pytest.approx(total, rel=1e-5, abs=1e-6)
    assert loss.ce.item() == pytest.approx(ce, rel=1e-5)
    assert loss.kd.item() == pytest.approx(kd, rel=1e-5, abs=1e-6)


def test_kd_term_scales_with_t_squared_and_is_batchmean():
    s, t, y = torch.tensor([[1.0, -1.0, 0.5]]), torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    one = kd_loss(s, t, y, temperature=3.0, alpha=0.0)
    # Repeating the batch must not change a batch mean.
    batch = kd_loss(s.repeat(4, 1), t.repeat(4, 1), y.repeat(4), temperature=3.0, alpha=0.0)
    assert batch.kd.item() == pytest.approx(one.kd.item(), rel=1e-6)
    kl = _reference(s.numpy(), t.numpy(), y.numpy(), 3.0, 0.0)[2] / 9.0
    assert one.kd.item() == pytest.approx(9.0 * kl, rel=1e-5)


def test_alpha_one_is_labels_only_and_zero_is_teacher_only():
    s = torch.randn(4, 3, requires_grad=True)
    t, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    labels_only = kd_loss(s, t, y, temperature=2.0, alpha=1.0)
    assert labels_only.total.item() == pytest.approx(labels_only.ce.item())
    teacher_only = kd_loss(s, t, y, temperature=2.0, alpha=0.0)
    assert teacher_only.total.item() == pytest.approx(teacher_only.kd.item())


def test_no_gradient_reaches_the_teacher():
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2]), temperature=2.0, alpha=0.5).total.backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize(
    ("temperature", "alpha"), [(0.0, 0.5), (-1.0, 0.5), (1.0, 1.5), (1.0, -0.1)]
)
def test_rejects_bad_weights(temperature, alpha):
    with pytest.raises(ValueError, match="temperature|alpha"):
        kd_loss(
            torch.zeros(1, 2),
            torch.zeros(1, 2),
            torch.tensor([0]),
            temperature=temperature,
            alpha=alpha,
        )
