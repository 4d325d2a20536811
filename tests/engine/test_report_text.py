"""What the CLI says about a result: no speed-up claimed inside the noise."""

from __future__ import annotations

from engine.report_text import comparison_rows


def _record(median: float, low: float, high: float, size: int) -> dict:
    return {
        "metrics": {
            "size_bytes": size,
            "latency": {"1": {"median_ms": median, "ci_low_ms": low, "ci_high_ms": high}},
            "labelled": False,
            "sqnr_db": 30.0,
        }
    }


def _latency_words(base: dict, new: dict) -> str:
    return next(r[3] for r in comparison_rows(base, new) if r[0].startswith("latency"))


def test_overlapping_intervals_claim_no_speed_up() -> None:
    words = _latency_words(_record(1.00, 0.95, 1.05, 100), _record(0.98, 0.93, 1.03, 50))
    assert words.startswith("no clear difference")


def test_separated_intervals_give_the_ratio_either_way() -> None:
    assert _latency_words(_record(2.0, 1.9, 2.1, 100), _record(1.0, 0.95, 1.05, 50)) == "2.00x faster"
    assert _latency_words(_record(1.0, 0.95, 1.05, 100), _record(4.0, 3.8, 4.2, 50)) == "4.00x slower"


def test_non_finite_outputs_are_not_called_identical() -> None:
    bad = _record(1.0, 0.9, 1.1, 50)
    bad["metrics"].update(sqnr_db=None, non_finite_outputs=True)
    row = next(r for r in comparison_rows(_record(1.0, 0.9, 1.1, 100), bad) if r[0].startswith("output SQNR"))
    assert "NaN or Inf" in row[2]
