"""The IG core on its own (segkit.ig): quadrature rules against captum and against exact integrals, IG against a
closed form (their doctests run through `make test`'s --doctest-modules)."""
import math

import numpy as np
import pytest
import torch

from segkit import attribute
from segkit import ig

FIXED = [m for m in attribute.IG_METHODS if m != "adaptive"]


@pytest.mark.parametrize("method", [m for m in FIXED if m != "paper"])
def test_schedules_are_captums_to_the_bit(method):
    """The rules were captum's private ``approximation_parameters`` until it was dropped: same floats."""
    approximation_methods = pytest.importorskip("captum.attr._utils.approximation_methods")
    sizes, alphas = approximation_methods.approximation_parameters(method)
    for n in (2, 3, 5, 8, 15, 16, 50, 128):
        assert ig.schedule(method, n) == (list(sizes(n)), list(alphas(n)))


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_schedules_integrate_what_they_should(method, n):
    """Exact integrals over [0, 1]: Gauss-Legendre integrates x^(2n-1); midpoint and the paper's rule
    (sum_j j/(J-1) / J = 1/2) integrate x; left and right sums miss it by -/+ 1/(2n). captum's trapezoid puts
    weights 1/J (ends halved) on J points spaced 1/(J-1): its weights sum to 1 - 1/J, so it underestimates every
    integral by the share 1/J (kept as captum has it, so results of earlier runs stay reproducible)."""
    w, a = map(np.array, ig.schedule(method, n))
    assert len(w) == len(a) == n and np.all((a >= 0) & (a <= 1)) and np.all(np.diff(a) > 0)
    x = w @ a
    if method == "riemann_trapezoid":
        assert w.sum() == pytest.approx(1 - 1 / n, abs=1e-12) and x == pytest.approx((1 - 1 / n) / 2, abs=1e-7)
        return
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    if method == "gausslegendre":
        assert w @ a ** (2 * n - 1) == pytest.approx(1 / (2 * n), rel=1e-10)
    elif method in ("riemann_middle", "paper"):
        assert x == pytest.approx(0.5, abs=1e-7)
    elif method == "riemann_left":
        assert x == pytest.approx(0.5 - 1 / (2 * n), abs=1e-7)
    elif method == "riemann_right":
        assert x == pytest.approx(0.5 + 1 / (2 * n), abs=1e-7)


def test_schedule_rejects_what_cannot_run():
    with pytest.raises(ValueError, match="at least 2"):
        ig.schedule("riemann_left", 1)
    with pytest.raises(ValueError, match="at least 1"):
        ig.schedule("gausslegendre", 0)
    with pytest.raises(ValueError, match="unknown fixed IG scheme"):
        ig.schedule("adaptive", 8)  # adaptive is not a fixed schedule
    assert ig.schedule("paper", 1) == ([1.0], [0.0])


def cubic_path(batch_size=3):
    """F(e) = (sum_t e_t . u)^3 with baseline 0: IG_t = (x_t . u) S^2 exactly, S = sum_t x_t . u (dF/dx_t at
    alpha is 3 alpha^2 S^2 u)."""
    torch.manual_seed(1)
    x, u = torch.rand(1, 5, 4) + 0.1, torch.rand(4)
    x[0, 2] *= -1  # one token pulls the other way
    F = lambda e: (e @ u).sum(-1) ** 3  # noqa: E731  (B, T, H) -> (B,)
    s = float((x @ u).sum())
    exact = (x[0] @ u) * s ** 2
    return ig.InterpolationPath(F, x, torch.zeros_like(x), batch_size), exact, s ** 3


@pytest.mark.parametrize("method,steps", [("gausslegendre", 2), ("adaptive", 3), ("riemann_middle", 400),
                                          ("paper", 400)])
def test_integrated_gradients_against_the_closed_form(method, steps):
    path, exact, f1 = cubic_path()
    raw, used = ig.integrated_gradients(path, 0.0, f1, method, steps)
    tol = 1e-5 if method in ("gausslegendre", "adaptive") else 5e-3  # exact for a quadratic integrand, or O(1/J)
    assert used == steps
    assert torch.allclose(raw, exact, rtol=tol, atol=tol * float(exact.abs().max()))
    assert ig.completeness_error(raw, f1, 0.0) < tol


def test_paper_rule_error_shrinks_as_one_over_J():
    path, _, f1 = cubic_path()
    errors = [ig.completeness_error(ig.integrated_gradients(path, 0.0, f1, "paper", J)[0], f1, 0.0)
              for J in (10, 20, 40)]
    assert errors[0] > errors[1] > errors[2] > 0
    assert errors[0] / errors[2] == pytest.approx(4, rel=0.2)


def test_fixed_scheme_doubles_steps_until_the_target_error():
    path, exact, f1 = cubic_path()
    raw, used = ig.integrated_gradients(path, 0.0, f1, "riemann_right", 4, target_error=1e-2, max_steps=1024)
    assert used > 4 and used & (used - 1) == 0  # 4 doubled to a power of two
    assert ig.completeness_error(raw, f1, 0.0) <= 1e-2
    # riemann_right overshoots an increasing integrand, so half as many points would not have met the target
    half, _ = ig.integrated_gradients(path, 0.0, f1, "riemann_right", used // 2)
    assert ig.completeness_error(half, f1, 0.0) > 1e-2


def test_baseline_embeds():
    x, pad = torch.randn(1, 6, 3), torch.randn(3)
    b = ig.baseline_embeds(x, pad, "pad-trace", (2, 4))
    assert torch.equal(b[0, :2], x[0, :2]) and torch.equal(b[0, 4:], x[0, 4:]) and torch.equal(b[0, 2], pad)
    assert torch.equal(ig.baseline_embeds(x, pad, "pad", (2, 4))[0, 0], pad)
    assert not ig.baseline_embeds(x, pad, "zero", (2, 4)).any()
    with pytest.raises(ValueError, match="unknown baseline"):
        ig.baseline_embeds(x, pad, "mean", (2, 4))


def test_every_ig_method_is_known_to_the_core():
    path, _, f1 = cubic_path()
    for m in attribute.IG_METHODS:
        raw, _ = ig.integrated_gradients(path, 0.0, f1, m, 4)
        assert raw.shape == (5,)


def test_cubic_closed_form_is_right():
    """The closed form above, checked by finite differences on a path point."""
    path, exact, f1 = cubic_path()
    alpha, h = 0.6, 1e-3
    x = path.delta
    d = (path.F(x * (alpha + h)) - path.F(x * (alpha - h))) / (2 * h)
    assert float(path.integrand([alpha]).sum()) == pytest.approx(float(d), rel=1e-3)
    assert float(exact.sum()) == pytest.approx(f1, rel=1e-5) and math.isfinite(f1)
