"""Plans compare by their ratio to FP32 on the model's FP32 scale; older results by their median."""

from __future__ import annotations

import pytest

from engine.latency_compare import comparable_latency, latency_words

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
