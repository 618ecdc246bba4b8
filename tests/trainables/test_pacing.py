"""Every pacing function against values worked out by hand from its formula."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainables.curriculum import (
    PACING_KINDS,
    CompetencePacing,
    ConstantPacing,
    ExponentialStepPacing,
    WuPacing,
    make_pacing,
)

E10 = math.exp(10.0)


@pytest.mark.parametrize(
    ("shape", "progress", "expected"),
    [
        # b = 0.2, a = 0.5, x = p / a
        ("linear", 0.0, 0.2), ("linear", 0.25, 0.2 + 0.8 * 0.5), ("linear", 0.5, 1.0), ("linear", 0.9, 1.0),
        ("quadratic", 0.25, 0.2 + 0.8 * 0.25), ("quadratic", 0.4, 0.2 + 0.8 * 0.64),
        ("root", 0.125, 0.2 + 0.8 * 0.5), ("root", 0.32, 0.2 + 0.8 * 0.8),
        ("exp", 0.25, 0.2 + 0.8 * (math.exp(5.0) - 1) / (E10 - 1)), ("exp", 0.0, 0.2),
        ("log", 0.25, 0.2 + 0.8 * (1 + 0.1 * math.log(0.5 + math.exp(-10.0)))),
        ("log", 0.0, 0.2),  # 1 + 0.1 log(e^-10) = 0
        ("step", 0.49, 0.2), ("step", 0.5, 1.0),
    ],
)  # fmt: skip
def test_wu_family_by_hand(shape, progress, expected):
    assert WuPacing(shape, start=0.2, full_at=0.5)(progress) == pytest.approx(expected, rel=1e-9)


def test_step_pacing_with_several_jumps():
    pacing = WuPacing("step", start=0.1, full_at=0.6, num_steps=3)  # jumps at 0.2, 0.4, 0.6
    assert [pacing(p) for p in (0.0, 0.19, 0.2, 0.39, 0.4, 0.6)] == pytest.approx(
        [0.1, 0.1, 0.4, 0.4, 0.7, 1.0]
    )


def test_competence_sqrt_form_by_hand():
    # c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)), c0 = 0.1, T = 0.5
    pacing = CompetencePacing(start=0.1, full_at=0.5, power=2.0)
    assert pacing(0.0) == pytest.approx(0.1)
    assert pacing(0.25) == pytest.approx(math.sqrt(0.5 * 0.99 + 0.01))
    assert pacing(0.5) == pytest.approx(1.0)
    linear = CompetencePacing(start=0.1, full_at=0.5, power=1.0)
    assert linear(0.25) == pytest.approx(0.5 * 0.9 + 0.1)
    cubic = CompetencePacing(start=0.5, full_at=1.0, power=3.0)
    assert cubic(0.5) == pytest.approx((0.5 * (1 - 0.125) + 0.125) ** (1 / 3))


def test_exponential_steps_of_hacohen_and_weinshall():
    pacing = ExponentialStepPacing(start=0.04, inc=1.9, step_length=0.1)
    assert pacing(0.0) == pytest.approx(0.04)
    assert pacing(0.1) == pytest.approx(0.04 * 1.9)
    assert pacing(0.35) == pytest.approx(0.04 * 1.9**3)
    assert pacing(0.6) == 1.0  # 0.04 * 1.9^6 = 1.88 -> capped


@pytest.mark.parametrize("kind", PACING_KINDS)
@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_every_pacing_is_a_nondecreasing_fraction(kind, a, b):
    pacing = make_pacing(kind, start=0.1, full_at=0.7, num_steps=2, step_length=0.1)
    lo, hi = sorted((a, b))
    assert 0.0 < pacing(lo) <= pacing(hi) <= 1.0
    assert pacing(1.0) == 1.0
    assert ConstantPacing()(lo) == 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: WuPacing("cubic", start=0.2, full_at=0.5),
        lambda: WuPacing("linear", start=0.0, full_at=0.5),
        lambda: WuPacing("linear", start=0.2, full_at=1.5),
        lambda: CompetencePacing(start=0.1, full_at=0.5, power=0.0),
        lambda: ExponentialStepPacing(inc=1.0),
        lambda: make_pacing("sigmoid"),
    ],
)
def test_bad_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_piecewise_pacing_switches_pieces_at_their_fractions():
    from trainables.curriculum import PiecewisePacing, WuPacing

    pacing = PiecewisePacing(
        at=(0.0, 0.5), pieces=(WuPacing("linear", 0.2, 0.5), WuPacing("linear", 0.5, 0.9))
    )
    assert pacing(0.25) == pytest.approx(0.6)  # 0.2 + 0.8 * 0.25 / 0.5
    assert pacing(0.5) == pytest.approx(0.5 + 0.5 * 0.5 / 0.9)  # the second piece from 0.5 on
    with pytest.raises(ValueError, match="strictly increase"):
        PiecewisePacing(at=(0.0, 0.5, 0.5), pieces=(ConstantPacing(),) * 3)
    with pytest.raises(ValueError, match="at\\[0\\] = 0"):
        PiecewisePacing(at=(0.1,), pieces=(ConstantPacing(),))
