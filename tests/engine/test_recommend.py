"""Recommendations from real measurements of digits_cnn: the choice against a brute-force oracle,
the words around it, and the caveats that must appear."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from engine.api import Engine
from engine.goal import parse_goal
from engine.latency_compare import comparable_latency, comparable_ms
from engine.presets import PRESETS, preset_plan
from engine.recommend import caveats, choose, recommend, speed_words, statement
from engine.report import candidate_table
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision

SETTINGS = MeasureSettings(batch_sizes=(1,), max_seconds=0.5)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, dict[str, Any], list[dict[str, Any]]]:
    home: Path = tmp_path_factory.mktemp("recommend")
    engine = Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=SETTINGS)
    bundle = engine.model("digits_cnn")
    layers = engine.layers(bundle)
    records = engine.evaluate_many(bundle, [preset_plan(n, layers) for n in PRESETS])
    assert all(r["status"] == "ok" for r in records)
    return engine, engine.baseline(bundle), records


def _recommend(engine: Engine, baseline: dict[str, Any], text: str):  # type: ignore[no-untyped-def]
    return recommend(
        engine.store.to_frame("digits_cnn"), parse_goal(text), baseline, "digits_cnn", engine.store.get
    )


@pytest.mark.parametrize(
    "text",
    ["smallest within 1 point of FP32", "fastest under 150 kB", "most accurate under 0.2 MB", "fastest"],
)
def test_the_choice_is_the_best_plan_meeting_the_limits(measured, text: str) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, records = measured
    rec = _recommend(engine, baseline, text)
    goal = rec.goal
    fp32 = baseline["metrics"]
    limits = goal.constraints

    def meets(r: dict[str, Any]) -> bool:
        m = r["metrics"]
        drop_ok = (
            limits.max_accuracy_drop is None
            or (fp32["accuracy"] - m["accuracy"]) * 100 <= limits.max_accuracy_drop
        )
        size_ok = limits.max_size_bytes is None or m["size_bytes"] <= limits.max_size_bytes
        lat_ok = limits.max_latency_ms is None or comparable_ms(m["latency"]["1"]) <= limits.max_latency_ms
        return drop_ok and size_ok and lat_ok

    value = {
        "size": lambda r: r["metrics"]["size_bytes"],
        "latency": lambda r: comparable_ms(r["metrics"]["latency"]["1"]),
        "accuracy": lambda r: -r["metrics"]["accuracy"],
    }[goal.objective]
    feasible = [r for r in records if meets(r)]
    assert feasible, "each goal here has plans that meet it"
    assert rec.chosen is not None and meets(rec.chosen)
    assert value(rec.chosen) == min(value(r) for r in feasible)
    assert rec.candidates["chosen"].sum() == 1 and len(rec.candidates) == len({r["key"] for r in records})
    assert rec.headline.startswith("Recommended for the ") and rec.chosen["plan_summary"] in rec.headline


def test_an_impossible_goal_says_so_and_names_the_closest_plans(measured) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, _ = measured
    rec = _recommend(engine, baseline, "smallest under 1 kB")
    assert rec.chosen is None and rec.chosen_key is None
    assert rec.headline.startswith("No measured plan of digits_cnn meets the goal")
    # The closest three, smallest first, each with how far over the limit it is in kB.
    assert (
        "Closest: 5 INT4 (" in rec.statement and "5 INT8 dyn (97.52 kB over the size limit)" in rec.statement
    )
    assert not rec.candidates["meets"].any()


def test_the_statement_carries_size_speed_and_the_accuracy_interval(measured) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, records = measured
    int8 = next(r for r in records if r["plan_summary"] == "5 INT8")
    words = statement(int8, baseline)
    saved = 100 * (1 - int8["metrics"]["size_bytes"] / baseline["metrics"]["size_bytes"])
    assert words.startswith(f"{saved:.0f}% smaller, ")
    assert "95% CI" in words and "on 540 held-out examples" in words
    # The same measurement against itself: the intervals overlap, so no speed-up may be claimed.
    assert speed_words(baseline, baseline).startswith("no clear latency difference")


def test_caveats_name_the_cpu_fp16_and_noise(measured) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, records = measured
    fp16 = next(r for r in records if r["plan_summary"] == "5 FP16")
    said = " ".join(caveats(fp16, baseline, n_candidates=7))
    assert baseline["environment"]["cpu"] in said and "ONNX Runtime" in said
    assert "FP16 layers run as FP32 behind casts" in said  # this CPU has no native FP16 arithmetic
    assert "within noise" in said  # FP16 scores exactly what FP32 does on digits
    assert "evaluation set is small (540 examples)" in said
    assert "Only 7 plans were measured" in said
    int8 = next(r for r in records if r["plan_summary"] == "5 INT8")
    assert "FP16" not in " ".join(caveats(int8, baseline, n_candidates=7))


def test_a_language_model_is_described_by_sequences_and_perplexity(tmp_path: Path) -> None:
    engine = Engine(store=ResultStore(tmp_path / "results.sqlite"), home=tmp_path, settings=SETTINGS)
    bundle = engine.model("char_transformer")
    baseline = engine.baseline(bundle)
    int4 = engine.evaluate(bundle, Plan(default=Precision.INT4))
    words = statement(int4, baseline)
    n = bundle.eval_set.size
    assert f"on {n:,} held-out sequences" in words and "perplexity ×" in words
    said = " ".join(caveats(int4, baseline, n_candidates=2))
    # Scored per character: "one example is N points" would be wrong by the sequence length.
    assert "one example is" not in said and f"small ({n:,} sequences)" in said

    # Browser QA: with only FP32 measured, its report said "the accuracy interval is 0.00 points wide"
    # and "its 95% interval (0.00 to 0.00 points) includes zero": FP32 does not differ from itself.
    said = " ".join(caveats(baseline, baseline, n_candidates=1))
    assert "0.00 points" not in said and "within noise" not in said
    assert f"small ({n:,} sequences): differences between plans smaller than their accuracy" in said
    rec = recommend(
        engine.store.to_frame("char_transformer"),
        parse_goal("smallest"),
        baseline,
        "char_transformer",
        engine.store.get,
    )
    latency = dict(
        zip(candidate_table(rec)["plan"], candidate_table(rec)["latency, batch 1 (95% CI), ms"], strict=True)
    )
    fp32_ms = comparable_ms(baseline["metrics"]["latency"]["1"])
    assert latency[baseline["plan_summary"]] == f"{fp32_ms:.3f} (the FP32 scale)"  # not "(x to x)"
    low, high = comparable_latency(int4["metrics"]["latency"]["1"])[1:]
    assert latency[int4["plan_summary"]].endswith(f"({low:.3f} to {high:.3f})")


def test_a_plan_exactly_at_the_accuracy_limit_meets_it() -> None:
    baseline = {
        "status": "ok",
        "metrics": {"accuracy": 0.99, "size_bytes": 1000.0, "latency": {"1": {"median_ms": 1.0}}},
    }
    # 0.99 - 0.98 is 0.010000000000000009 in floating point: still "within 1 point".
    candidates = pd.DataFrame(
        {"accuracy_drop": [0.99 - 0.98, 0.99 - 0.975], "size_bytes": [500.0, 400.0], "latency_ms": [1.0, 1.0]}
    )
    out = choose(candidates, parse_goal("smallest within 1 point"), baseline)
    assert out["meets"].tolist() == [True, False] and out["chosen"].tolist() == [True, False]
    relative = choose(candidates, parse_goal("smallest within 1.6% of FP32"), baseline)  # 1.584 points
    assert relative["meets"].tolist() == [True, True] and relative["chosen"].tolist() == [False, True]


def test_plans_timed_with_another_thread_count_are_not_candidates(measured) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, _ = measured
    bundle = engine.model("digits_cnn")
    other = engine.evaluate(bundle, Plan(default=Precision.INT8), settings=replace(SETTINGS, threads=2))
    assert other["status"] == "ok"
    rec = _recommend(engine, baseline, "fastest")
    assert other["key"] not in set(rec.candidates["key"]) and len(rec.candidates) == 7


def test_the_plans_considered_carry_their_latency_interval(measured) -> None:  # type: ignore[no-untyped-def]
    engine, baseline, records = measured
    rec = _recommend(engine, baseline, "fastest")
    table = candidate_table(rec).set_index("plan")
    for r in records:
        value, low, high = comparable_latency(r["metrics"]["latency"]["1"])
        assert low <= value <= high
        shown = table.loc[r["plan_summary"], "latency, batch 1 (95% CI), ms"]
        if r["plan_summary"] == "5 FP32":  # the scale the others are timed against: no interval
            assert shown == f"{value:.3f} (the FP32 scale)"
        else:
            assert shown == f"{value:.3f} ({low:.3f} to {high:.3f})"


def test_a_chosen_plan_whose_interval_crosses_the_accuracy_limit_is_said_to_meet_it_not_surely(
    measured,  # type: ignore[no-untyped-def]
) -> None:
    _, baseline, records = measured
    int8 = next(r for r in records if r["plan_summary"] == "5 INT8")
    crossing = {**int8, "metrics": {**int8["metrics"], "accuracy_delta_ci_low": -0.011}}
    said = " ".join(caveats(crossing, baseline, n_candidates=7, drop_limit=0.01))
    assert "not surely: its 95% interval reaches −1.1 points, past the limit of −1.0 points" in said
    inside = {**int8, "metrics": {**int8["metrics"], "accuracy_delta_ci_low": -0.009}}
    assert "not surely" not in " ".join(caveats(inside, baseline, n_candidates=7, drop_limit=0.01))
    assert "not surely" not in " ".join(caveats(crossing, baseline, n_candidates=7))  # no accuracy limit


def test_after_a_search_the_few_plans_caveat_does_not_send_the_user_to_search(
    measured,  # type: ignore[no-untyped-def]
) -> None:
    _, baseline, records = measured
    int8 = next(r for r in records if r["plan_summary"] == "5 INT8")
    said = " ".join(caveats(int8, baseline, n_candidates=7, searched=True))
    assert "a search's among them; a search with a larger budget may find better ones" in said
    assert "a search (Sensitivity & search) may find" not in said
    assert "Only 1 plan was measured" in " ".join(caveats(int8, baseline, n_candidates=1))


def test_the_recommendation_says_when_the_chosen_interval_crosses_the_goals_limit(
    measured,  # type: ignore[no-untyped-def]
) -> None:
    engine, baseline, _ = measured
    seen = set()
    for limit in (0.2, 0.5, 1, 2, 5):
        rec = _recommend(engine, baseline, f"smallest model within {limit} points of FP32 accuracy")
        assert rec.chosen is not None
        crosses = -rec.chosen["metrics"]["accuracy_delta_ci_low"] > limit / 100
        assert ("not surely" in " ".join(rec.caveats)) == crosses, (limit, rec.chosen["plan_summary"])
        seen.add(crosses)
    assert seen == {True, False}  # both cases came up on digits_cnn's presets
