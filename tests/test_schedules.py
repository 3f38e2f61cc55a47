"""Schedules: BYOL / MoCo v3 cosine EMA momentum against its formula and its end points."""
import jax
import numpy as np
import pytest

from jaxssl import schedules


@pytest.mark.parametrize("base,total", [(0.996, 1000), (0.99, 7), (0.0, 1)])
def test_cosine_momentum_end_points_and_midpoint(base, total):
    f = schedules.cosine_momentum(base, total)
    np.testing.assert_allclose(f(0), base, rtol=1e-6)
    assert float(f(total)) == 1.0
    assert float(f(total + 5)) == 1.0  # held after the last step
    if total % 2 == 0:
        np.testing.assert_allclose(f(total // 2), (1 + base) / 2, rtol=1e-6)


def test_cosine_momentum_matches_byol_and_moco_v3_formulas():
    base, total = 0.99, 250
    f = jax.jit(schedules.cosine_momentum(base, total))
    k = np.arange(total + 1)
    got = np.asarray([f(i) for i in k], np.float64)
    byol = 1 - (1 - base) * (np.cos(np.pi * k / total) + 1) / 2  # BYOL Sec. 3.2
    moco_v3 = 1.0 - 0.5 * (1.0 + np.cos(np.pi * k / total)) * (1.0 - base)  # moco-v3 adjust_moco_momentum
    np.testing.assert_allclose(got, byol, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, moco_v3, rtol=0, atol=1e-6)
    assert np.all(np.diff(got) >= -1e-7)  # non-decreasing


def test_cosine_momentum_final_value_and_errors():
    f = schedules.cosine_momentum(0.99, 10, final_value=0.999)
    np.testing.assert_allclose(f(10), 0.999, rtol=1e-7)
    assert float(schedules.cosine_momentum(0.99, 0)(0)) == 1.0  # total_steps=0: evaluation-only runs
    with pytest.raises(ValueError, match="total_steps"):
        schedules.cosine_momentum(0.99, -1)
    with pytest.raises(ValueError, match="momentum"):
        schedules.cosine_momentum(1.5, 10)
