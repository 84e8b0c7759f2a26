"""The histograms the gradient-histograms callback logs to W&B, computed without training."""

import torch

from chainrule.callbacks.gradient_histograms import histogram


def test_histogram_counts_every_finite_value_between_min_and_max() -> None:
    values = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, float("nan"), float("inf"), 4.0]])
    counts, edges = histogram(values, num_bins=4)
    assert counts == [1.0, 1.0, 1.0, 3.0] and edges == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_histogram_of_a_constant_is_one_bin_and_of_no_finite_value_is_none() -> None:
    assert histogram(torch.full((3, 2), 0.5), num_bins=8) == ([6.0], [0.5, 0.5])
    assert histogram(torch.tensor([float("nan"), float("-inf")]), num_bins=8) is None
