"""Fréchet and kernel distances against closed forms and torchmetrics; precision, recall, density and
coverage against cases checked by hand."""

import math

import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from pipeline.metrics import precision_recall as precision_recall_module
from pipeline.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_of
from pipeline.metrics.kernel_distance import kernel_distance
from pipeline.metrics.precision_recall import PrecisionRecall, knn_radii, precision_recall


def gaussian_features(n, dim, shift=0.0, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)


def test_running_stats_equal_batch_statistics_and_combine_by_sum():
    f = gaussian_features(500, 6)
    a, b = FeatureStats.empty(6), FeatureStats.empty(6)
    a.update(f[:200])
    b.update(f[200:])
    merged = FeatureStats(a.n + b.n, a.total + b.total, a.outer + b.outer)  # what all_reduce computes
    mu, cov = merged.mean_cov()
    assert torch.allclose(mu, f.mean(0)) and torch.allclose(cov, torch.cov(f.T))


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # N(m1, s1^2 I) vs N(m2, s2^2 I) in d dims: ||m1 - m2||^2 + d (s1 - s2)^2
    d = 4
    value = frechet_distance(torch.zeros(d), 4 * torch.eye(d), torch.full((d,), 1.0), torch.eye(d))
    assert value == pytest.approx(d * 1.0 + d * (2 - 1) ** 2, abs=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_matches_torchmetrics():
    real, fake = gaussian_features(800, 8), gaussian_features(800, 8, shift=0.5, scale=1.3, seed=1)
    s_real, s_fake = FeatureStats.empty(8), FeatureStats.empty(8)
    s_real.update(real)
    s_fake.update(fake)
    assert abs(frechet_distance_of(s_real, s_real)) < 1e-8
    ours = frechet_distance_of(s_real, s_fake)
    theirs = float(_compute_fid(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T)))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours == pytest.approx(8 * 0.25 + 8 * 0.3**2, rel=0.25)  # near the population value


def test_kernel_distance_is_unbiased_near_zero_for_one_distribution_and_large_for_two():
    same_mean, same_std = kernel_distance(gaussian_features(600, 16), gaussian_features(600, 16, seed=2),
                                          subsets=20, subset_size=300)
    diff_mean, _ = kernel_distance(gaussian_features(600, 16), gaussian_features(600, 16, shift=1.0, seed=2),
                                   subsets=20, subset_size=300)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert diff_mean > 100 * max(abs(same_mean), 1e-4)


def test_kernel_distance_matches_torchmetrics_on_the_same_subsets():
    from torchmetrics.image.kid import poly_mmd

    real, fake = gaussian_features(50, 5), gaussian_features(50, 5, shift=0.3, seed=3)
    ours, _ = kernel_distance(real, fake, subsets=1, subset_size=50)
    # one subset of the full sets: permutation does not change MMD
    theirs = float(poly_mmd(real, fake, degree=3, gamma=None, coef=1.0))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert not math.isnan(ours)


# ---- precision / recall (Kynkaanniemi et al., 2019), density / coverage (Naeem et al., 2020) ----------------
def test_identical_sets_have_precision_recall_and_coverage_one():
    real = gaussian_features(60, 5)
    result = precision_recall(real, real.clone(), k=3)
    assert (result.precision, result.recall, result.coverage) == (1.0, 1.0, 1.0)


def test_a_collapsed_generator_has_full_precision_and_almost_no_recall():
    real = gaussian_features(50, 4)
    collapsed = real[:1].repeat(50, 1)  # every fake at the first real point
    result = precision_recall(real, collapsed, k=3)
    assert result.precision == 1.0
    assert result.recall == 1 / 50  # the fakes' balls have radius 0: only the real point they sit on is inside
    assert result.coverage < 0.2  # only the real balls reaching the first real point hold a fake


def test_a_disjoint_set_has_zero_coverage_precision_recall_and_density():
    real, fake = gaussian_features(40, 3), gaussian_features(40, 3, shift=100.0, seed=1)
    assert precision_recall(real, fake, k=3) == PrecisionRecall(0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("k, expected", [
    # reals 0, 1, 3, 6; fakes 0.5, 2.5, 10. k=1: real radii 1, 1, 2, 3; fake radii 2, 2, 7.5.
    # precision: 0.5 (ball of 0) and 2.5 (ball of 3) are inside, 10 is not: 2/3. recall: every real is within a
    # fake ball (6 within 7.5 of 10): 1. density: 0.5 is in the balls of 0 and 1, 2.5 in that of 3, 10 in none:
    # (2 + 1 + 0) / (1 * 3) = 1. coverage: the ball of 6 (radius 3) holds no fake (nearest 3.5 away): 3/4.
    (1, PrecisionRecall(precision=2 / 3, recall=1.0, density=1.0, coverage=3 / 4)),
    # k=2: real radii 3, 2, 3, 5: 0.5 is in 3 balls, 2.5 in all 4, 10 in that of 6: density (3 + 4 + 1) / (2 * 3).
    (2, PrecisionRecall(precision=1.0, recall=1.0, density=4 / 3, coverage=1.0)),
])
def test_one_dimensional_case_computed_by_hand(k, expected):
    # No distance equals a radius here, so prdc's open balls give the same numbers as these closed ones.
    real = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    fake = torch.tensor([[0.5], [2.5], [10.0]])
    result = precision_recall(real, fake, k=k)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(result, name) == pytest.approx(getattr(expected, name), abs=1e-12), name


def test_chunked_distances_give_the_same_numbers(monkeypatch):
    real, fake = gaussian_features(70, 3), gaussian_features(50, 3, shift=0.3, seed=2)
    whole = precision_recall(real, fake, k=3)
    monkeypatch.setattr(precision_recall_module, "_CHUNK", 7)  # chunk edges inside both sets
    assert precision_recall(real, fake, k=3) == whole
    assert 0 < whole.precision < 1 and 0 < whole.recall < 1


def test_radii_need_more_points_than_k():
    with pytest.raises(ValueError, match="k=3 for 3"):
        knn_radii(gaussian_features(3, 2), 3)
