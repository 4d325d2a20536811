"""Plans compare by their ratio to FP32 on the model's FP32 scale; older results by their median."""

from __future__ import annotations

import pytest

from engine.latency_compare import comparable_latency, latency_words, ratio_to_fp32

OLD = {"median_ms": 0.5, "ci_low_ms": 0.45, "ci_high_ms": 0.55, "runs": 40}
NEW = {**OLD, "vs_fp32": 0.8, "vs_fp32_ci_low": 0.78, "vs_fp32_ci_high": 0.83, "fp32_ms": 0.4}


def test_a_result_with_a_ratio_is_put_on_the_fp32_scale():
    assert comparable_latency(NEW) == pytest.approx((0.32, 0.312, 0.332))


def test_a_result_without_one_keeps_its_median_and_interval():
    assert comparable_latency(OLD) == (0.5, 0.45, 0.55)


def test_the_words_say_how_the_figure_was_obtained():
    words = latency_words(NEW)
    assert words.startswith("0.320 ms (95% CI 0.312–0.332 ms, from the ratio)")
    assert "0.80× FP32" in words and "timed alternately" in words and "own median 0.500 ms" in words
    assert latency_words(OLD) == "0.500 ms (95% CI 0.450–0.550 ms), 40 runs"


REFERENCE = {**OLD, "vs_fp32": 1.0, "vs_fp32_ci_low": 1.0, "vs_fp32_ci_high": 1.0, "fp32_ms": 0.4}


def test_the_fp32_plan_is_the_scale_itself_not_a_multiple_of_it():
    assert comparable_latency(REFERENCE) == (0.4, 0.4, 0.4)
    words = latency_words(REFERENCE)
    assert words.startswith("0.400 ms: the FP32 model, the scale every plan") and "× FP32" not in words


def test_a_plan_compares_with_fp32_by_its_paired_ratio_whatever_the_fp32_result_measured():
    # An FP32 result from before the reference rule, timed against itself at 1.035: the plan's
    # statement is still its own ratio (1.09, CI 1.05-1.14), what its "= 1.09× FP32" says.
    old_fp32 = {**REFERENCE, "vs_fp32": 1.035, "vs_fp32_ci_low": 1.0, "vs_fp32_ci_high": 1.07}
    plan = {**NEW, "vs_fp32": 1.09, "vs_fp32_ci_low": 1.05, "vs_fp32_ci_high": 1.14}
    assert ratio_to_fp32(plan, old_fp32) == (1.09, True)
    assert ratio_to_fp32({**plan, "vs_fp32_ci_low": 0.98}, old_fp32) == (
        1.09,
        False,
    )  # holds 1: no clear change
    assert ratio_to_fp32(OLD, {**OLD, "median_ms": 0.25, "ci_low_ms": 0.2, "ci_high_ms": 0.3}) == (2.0, True)
