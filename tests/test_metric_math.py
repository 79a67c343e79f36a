"""Fréchet and kernel distances against closed forms and against torchmetrics on the same features."""

import math

import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from pipeline.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_of
from pipeline.metrics.kernel_distance import kernel_distance


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
