"""Self-paced and focal weights, distillation schedules and stage progression, by hand."""

import math

import pytest
import torch

from trainables.curriculum import (
    SelfPacedWeighting,
    StageController,
    WuPacing,
    focal_weights,
    spl_weights,
)
from trainables.distill._schedules import (
    Constant,
    Cosine,
    CTKDTemperature,
    Linear,
    Step,
    make_schedule,
)

L = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64)


def test_spl_hard_and_linear():
    assert spl_weights(L, 0.4, "hard").tolist() == [1, 1, 0, 0]
    assert spl_weights(L, 0.5, "linear").tolist() == pytest.approx([0.8, 0.4, 0.0, 0.0])
    assert spl_weights(L, math.inf, "hard").tolist() == [1, 1, 1, 1]


def test_spl_log_by_hand():
    # lambda = 0.6, zeta = 0.4: v = log(l + 0.4) / log(0.4) for l < 0.6
    expected = [
        math.log(0.5) / math.log(0.4),
        math.log(0.7) / math.log(0.4),
        math.log(0.9) / math.log(0.4),
        0.0,
    ]
    assert spl_weights(L, 0.6, "log").tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="0 < lambda < 1"):
        spl_weights(L, 1.5, "log")


def test_spl_mixture_by_hand():
    # lambda = 0.6, lambda' = 0.3 (ratio 0.5): zeta = 0.3*0.6/0.3 = 0.6
    # l = 0.1, 0.3 <= lambda' -> 1; l = 0.5 -> 0.6/0.5 - 0.6/0.6 = 0.2; l = 0.7 >= lambda -> 0
    assert spl_weights(L, 0.6, "mixture", mixture_ratio=0.5).tolist() == pytest.approx(
        [1.0, 1.0, 0.2, 0.0]
    )


def test_self_paced_thresholds_grow():
    by_epoch = SelfPacedWeighting("hard", loss_scale=1.0, growth="mu", lambda0=0.2, mu=2.0)
    assert by_epoch.threshold(L, progress=0.0, epoch=0) == pytest.approx(0.2)
    assert by_epoch.threshold(L, progress=0.0, epoch=2) == pytest.approx(0.8)
    assert by_epoch(L, progress=0.0, epoch=1).tolist() == [1, 1, 0, 0]  # lambda 0.4
    by_pacing = SelfPacedWeighting(
        "hard", loss_scale=1.0, growth="pacing", pacing=WuPacing("linear", start=0.5, full_at=0.5)
    )
    assert by_pacing(L, progress=0.0, epoch=0).tolist() == [1, 1, 0, 0]  # the 0.5 quantile (0.4)
    assert by_pacing(L, progress=0.5, epoch=0).tolist() == [1, 1, 1, 1]  # all data at full_at


def test_focal_weights_by_hand():
    ce = torch.tensor([-math.log(0.9), -math.log(0.5)])
    assert focal_weights(ce, 2.0).tolist() == pytest.approx([0.01, 0.25])
    assert focal_weights(ce, 0.0).tolist() == pytest.approx([1.0, 1.0])


def test_schedules_by_hand():
    assert Constant(3.0)(0.7) == 3.0
    assert Linear(4.0, 1.0)(0.5) == pytest.approx(2.5)
    assert Cosine(4.0, 1.0)(0.0) == pytest.approx(4.0)
    assert Cosine(4.0, 1.0)(0.5) == pytest.approx(2.5)
    assert Cosine(4.0, 1.0)(1.0) == pytest.approx(1.0)
    step = Step((0.3, 0.6), (8.0, 4.0, 2.0))
    assert [step(p) for p in (0.0, 0.29, 0.3, 0.6, 1.0)] == [8.0, 8.0, 4.0, 2.0, 2.0]
    assert make_schedule("step", start=8.0, boundaries=(0.5,), values=(1.0,))(0.75) == 1.0
    with pytest.raises(ValueError, match="one more entry"):
        Step((0.5,), (1.0,))


def test_ctkd_temperature_starts_where_asked_and_is_pushed_up_by_the_reversed_gradient():
    module = CTKDTemperature(initial=4.0, warmup=0.1)
    assert module(0.5).item() == pytest.approx(4.0, rel=1e-5)
    assert (
        module.strength(0.0) == 0.0
        and module.strength(0.05) == pytest.approx(0.5)
        and module.strength(0.2) == 1.0
    )
    (module(0.5) * 1.0).backward()  # minimising tau directly: the reversal makes theta grow instead
    assert module.theta.grad.item() < 0
    with pytest.raises(ValueError, match="\\(1, 21\\)"):
        CTKDTemperature(initial=0.5)


def test_stage_controller_fixed_and_gated():
    fixed = StageController([0.25, 0.25, 0.5])
    assert [fixed.update(p) for p in (0.0, 0.24, 0.25, 0.49, 0.5, 0.99)] == [0, 0, 1, 1, 2, 2]
    gate = StageController([0.5, 0.5, 1.0], progression="threshold", threshold=0.8)
    assert gate.update(0.1, 0.7) == 0
    assert gate.update(0.2, 0.85) == 1  # threshold reached
    assert gate.update(0.75, 0.1) == 2  # 0.2 + 0.5 max length exceeded
    plateau = StageController([1.0, 1.0], progression="plateau", patience=2)
    assert [plateau.update(0.1 * i, acc) for i, acc in enumerate([0.5, 0.6, 0.6, 0.6, 0.9])] == [
        0,
        0,
        0,
        1,
        1,
    ]
    state = plateau.state_dict()
    copy = StageController([1.0, 1.0], progression="plateau", patience=2)
    copy.load_state_dict(state)
    assert copy.stage == 1
