import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gms_hub.evaluation.calibration import (
    CalibrationAccumulator, ErrorAUROCAccumulator, average_ranks, brier_score, calibration_bins, error_auroc,
    expected_calibration_error, spearman,
)
from gms_hub.evaluation.reliability import reliability_diagram


def _case(seed=0, n=2000):
    r = np.random.default_rng(seed)
    probs = r.random(n)
    probs[:20] = 1.0  # the right edge belongs to the last bin
    probs[20:40] = 0.0
    targets = r.random(n) < probs ** 2  # miscalibrated on purpose
    return probs, targets


def _direct_ece(probs, targets, n_bins):
    total, ece = len(probs), 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        inside = (probs >= lo) & ((probs < hi) if i < n_bins - 1 else (probs <= hi))
        if inside.any():
            ece += inside.sum() / total * abs(targets[inside].mean() - probs[inside].mean())
    return ece


def _brute_force_auroc(scores, positives):
    pos, neg = scores[positives], scores[~positives]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _brute_force_ranks(x):
    return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])


@pytest.mark.parametrize("n_bins", [15, 4])
def test_ece_matches_direct_computation(n_bins):
    probs, targets = _case()
    assert expected_calibration_error(probs, targets, n_bins) == pytest.approx(_direct_ece(probs, targets, n_bins),
                                                                               abs=1e-12)
    assert expected_calibration_error(probs, targets, n_bins) > 0.05  # the case is miscalibrated


def test_ece_is_zero_for_calibrated_bins_and_accepts_tensors():
    probs = np.array([0.25] * 4 + [0.75] * 4)
    targets = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(probs, targets, n_bins=2) == pytest.approx(0.0, abs=1e-15)
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(targets), n_bins=2) == pytest.approx(0.0)


def test_brier_matches_direct_computation():
    probs, targets = _case(1)
    assert brier_score(probs, targets) == pytest.approx(np.mean((probs - targets.astype(float)) ** 2), abs=1e-15)


def test_input_checks():
    with pytest.raises(ValueError, match="same shape"):
        brier_score(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([True]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        brier_score(np.array([0.5]), np.array([2]))


def test_average_ranks_and_spearman_against_hand_computation():
    r = np.random.default_rng(2)
    x = r.integers(0, 6, 40).astype(float)  # many ties
    y = x + r.normal(0, 2, 40)
    assert np.array_equal(average_ranks(x), _brute_force_ranks(x))
    expected = np.corrcoef(_brute_force_ranks(x), _brute_force_ranks(y))[0, 1]
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), y[:5]))


def test_error_auroc_matches_pair_counting_with_ties():
    r = np.random.default_rng(3)
    uncertainty = np.round(r.random(300), 1)  # ties
    errors = r.random(300) < 0.2 + 0.6 * uncertainty
    assert error_auroc(uncertainty, errors) == pytest.approx(_brute_force_auroc(uncertainty, errors), abs=1e-12)
    assert error_auroc(uncertainty, errors) > 0.55  # errors grow with the uncertainty
    assert error_auroc(uncertainty.reshape(15, 20), errors.reshape(15, 20)) == error_auroc(uncertainty, errors)


def test_error_auroc_extremes():
    u = np.array([0.1, 0.2, 0.8, 0.9])
    assert error_auroc(u, np.array([False, False, True, True])) == 1.0
    assert error_auroc(u, np.array([True, True, False, False])) == 0.0
    assert error_auroc(np.full(4, 0.3), np.array([True, False, True, False])) == 0.5
    assert np.isnan(error_auroc(u, np.zeros(4, bool))) and np.isnan(error_auroc(u, np.ones(4, bool)))


def test_calibration_accumulator_equals_one_shot():
    probs, targets = _case(4)
    acc = CalibrationAccumulator()
    for start in range(0, len(probs), 333):
        acc.update(probs[start : start + 333], targets[start : start + 333])
    one_shot = calibration_bins(probs, targets)
    streamed = acc.bin_stats()
    assert np.array_equal(streamed["counts"], one_shot["counts"]) and acc.total == len(probs)
    assert np.allclose(streamed["confidence"], one_shot["confidence"], atol=1e-12, equal_nan=True)
    assert np.allclose(streamed["frequency"], one_shot["frequency"], atol=1e-12, equal_nan=True)
    assert acc.ece() == pytest.approx(expected_calibration_error(probs, targets), abs=1e-12)
    assert acc.brier() == pytest.approx(brier_score(probs, targets), abs=1e-12)


def test_auroc_accumulator_is_exact_on_bin_quantised_values():
    r = np.random.default_rng(5)
    n_bins = 64
    uncertainty = (r.integers(0, n_bins, 3000) + 0.5) / n_bins  # one value per bin
    errors = r.random(3000) < uncertainty
    acc = ErrorAUROCAccumulator(n_bins)
    for start in range(0, 3000, 700):
        acc.update(uncertainty[start : start + 700].reshape(-1, 1), errors[start : start + 700].reshape(-1, 1))
    assert acc.auroc() == pytest.approx(error_auroc(uncertainty, errors), abs=1e-12)


def test_auroc_accumulator_stays_within_its_bound_on_continuous_values():
    r = np.random.default_rng(6)
    uncertainty = r.random(5000)
    errors = r.random(5000) < uncertainty ** 3
    exact = error_auroc(uncertainty, errors)
    coarse = ErrorAUROCAccumulator(8)
    coarse.update(uncertainty, errors)
    fine = ErrorAUROCAccumulator()
    fine.update(uncertainty, errors)
    assert abs(coarse.auroc() - exact) <= coarse.max_error() and abs(coarse.auroc() - exact) > 1e-4
    assert abs(fine.auroc() - exact) <= fine.max_error() < 1e-3
    empty = ErrorAUROCAccumulator()
    empty.update(uncertainty, np.zeros(5000, bool))
    assert np.isnan(empty.auroc())


def test_reliability_diagram_writes_a_png(tmp_path):
    probs, targets = _case(7)
    path = reliability_diagram(calibration_bins(probs, targets), tmp_path)
    assert path == tmp_path / "reliability.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (500, 600)
    acc = CalibrationAccumulator()
    acc.update(probs, targets)
    other = reliability_diagram(acc.bin_stats(), tmp_path / "sub" / "diagram.png", title="test")
    assert other.is_file()


def test_importing_the_package_does_not_import_matplotlib():
    code = ("import sys, gms_hub, gms_hub.evaluation.calibration, gms_hub.inference.uncertainty; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auroc_accumulator_counts_exact_zeros_and_ones_as_true_ties():
    """A confident model puts most pixels at exactly 0 uncertainty: those ties are exact, not a binning error."""
    r = np.random.default_rng(7)
    uncertainty = np.where(r.random(4000) < 0.9, 0.0, r.random(4000) * 1e-5)  # 90% exactly 0, the rest in bin 0
    uncertainty[:40] = 1.0
    errors = r.random(4000) < np.where(uncertainty > 0, 0.6, 0.05)
    acc = ErrorAUROCAccumulator()
    acc.update(uncertainty, errors)
    exact = error_auroc(uncertainty, errors)
    # only the ~10% non-zero pixels share a histogram bin; the exact-0 and exact-1 ties cost nothing
    assert acc.max_error() < 0.02
    assert abs(acc.auroc() - exact) <= acc.max_error()
    quantised = np.where(uncertainty == 0.0, 0.0, np.where(uncertainty == 1.0, 1.0, 0.5))
    exact_bins = ErrorAUROCAccumulator(2)
    exact_bins.update(quantised, errors)
    assert exact_bins.auroc() == pytest.approx(error_auroc(quantised, errors), abs=1e-12)
    assert exact_bins.max_error() == pytest.approx(0.5 * np.sum(errors[quantised == 0.5]) * np.sum(~errors[quantised == 0.5])
                                                   / (errors.sum() * (~errors).sum()))


def test_accumulators_merge_like_one_pass():
    r = np.random.default_rng(8)
    probs, targets = r.random(3000), r.random(3000) < 0.3
    uncertainty, errors = r.random(3000), r.random(3000) < 0.2
    whole_c, whole_a = CalibrationAccumulator(), ErrorAUROCAccumulator()
    whole_c.update(probs, targets)
    whole_a.update(uncertainty, errors)
    part_c, part_a = CalibrationAccumulator(), ErrorAUROCAccumulator()
    for half in (slice(0, 1000), slice(1000, None)):
        other_c, other_a = CalibrationAccumulator(), ErrorAUROCAccumulator()
        other_c.update(probs[half], targets[half])
        other_a.update(uncertainty[half], errors[half])
        part_c.merge(other_c)
        part_a.merge(other_a)
    assert part_c.ece() == pytest.approx(whole_c.ece(), abs=1e-12) and part_c.brier() == pytest.approx(whole_c.brier())
    assert part_a.auroc() == whole_a.auroc()
    with pytest.raises(ValueError, match="n_bins=4096"):
        part_a.merge(ErrorAUROCAccumulator(8))
