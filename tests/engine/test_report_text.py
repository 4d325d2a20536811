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


def _latency_cells(base: dict, new: dict) -> list[str]:
    return next(r for r in comparison_rows(base, new) if r[0].startswith("latency"))


def test_the_fp32_scale_is_labelled_not_given_a_zero_width_interval() -> None:
    base = _record(1.536, 1.464, 1.604, 100)
    # The FP32 plan's latency is the model's FP32 scale: its ratio is 1 by definition (engine.evaluate).
    base["metrics"]["latency"]["1"].update(
        vs_fp32=1.0, vs_fp32_ci_low=1.0, vs_fp32_ci_high=1.0, fp32_ms=1.425
    )
    cells = _latency_cells(base, _record(1.0, 0.95, 1.05, 50))
    assert cells[1] == "1.425 ms (the FP32 scale; this run's median 1.536 [1.464-1.604])"


def test_a_latency_that_did_not_converge_says_so() -> None:
    new = _record(1.0, 0.7, 1.3, 50)
    new["metrics"]["latency"]["1"].update(converged=False, runs=300)
    assert (
        _latency_cells(_record(2.0, 1.9, 2.1, 100), new)[2]
        == "1.000 ms [0.700-1.300] (not converged after 300 runs)"
    )
    new["metrics"]["latency"]["1"]["converged"] = True
    assert _latency_cells(_record(2.0, 1.9, 2.1, 100), new)[2] == "1.000 ms [0.700-1.300]"


def test_results_rows_give_percent_points_and_whole_bytes() -> None:
    from engine.report_text import RESULT_HEADERS, result_rows

    nan = float("nan")
    record = {
        "key": "0c52c0ef936e4e", "model_name": "digits_cnn", "plan_summary": "5 INT8", "status": "ok",
        "size_bytes": 103353.0, "latency_ms_b1": 0.0233, "accuracy": 0.985185, "accuracy_delta": -0.001,
        "accuracy_delta_ci_low": -0.0037, "accuracy_delta_ci_high": 0.0019, "sqnr_db": 38.128,
        "created_at": "2026-12-07 21:46:27.381443+00:00",
    }  # fmt: skip
    assert dict(zip(RESULT_HEADERS, result_rows([record])[0], strict=True)) == {
        "key": "0c52c0ef93", "model": "digits_cnn", "plan": "5 INT8", "status": "ok",
        "size (bytes)": "103,353", "latency b=1 (ms)": "0.023", "accuracy (%)": "98.52",
        "change (pt)": "-0.10", "change 95% CI (pt)": "-0.37 to +0.19", "SQNR (dB)": "38.1",
        "measured (UTC)": "2026-12-07 21:46:27",
    }  # fmt: skip
    failed = {**record, **dict.fromkeys(["size_bytes", "latency_ms_b1", "accuracy", "sqnr_db"], nan)}
    failed.update(accuracy_delta=None, accuracy_delta_ci_low=nan, accuracy_delta_ci_high=nan, status="failed")
    assert result_rows([failed])[0][4:10] == ["-"] * 6


def test_bytes_read_in_decimal_units_as_the_dashboard_gives_them() -> None:
    """CLI QA: inspect gave a 2,560-byte layer as "2.50 KB" (binary) where the dashboard said 2.56 kB."""
    from engine.report_text import human_bytes

    assert [human_bytes(n) for n in (512, 2_560, 1_130_000, 3.2e9)] == [
        "512 B",
        "2.56 kB",
        "1.13 MB",
        "3.20 GB",
    ]
