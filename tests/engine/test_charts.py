"""Chart info objects from a real ResultStore holding hand-made records (asserting data, not pixels)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
import pytest

from engine.charts import filter_results, model_identity, pareto_plot_info, with_derived
from engine.compare_tables import compare_table, layer_differences, per_class_table
from engine.pareto_figure import ParetoGridInfo, pareto_figure, pareto_grid_figure, selected_key
from engine.store import ResultStore

LAYERS = ["a", "b", "c"]


def record(
    key: str, precs: list[str], size: float, lat: float, acc: float, model: str = "m"
) -> dict[str, Any]:
    return {
        "key": key,
        "model_name": model,
        "status": "ok",
        "plan": {"default": "fp32", "layers": dict(zip(LAYERS, precs, strict=True))},
        "plan_summary": f"{key} summary",
        "metrics": {
            "size_bytes": size,
            "fp32_size_bytes": 400.0,
            "accuracy": acc,
            "fp32_accuracy": 0.9,
            "accuracy_delta": acc - 0.9,
            "accuracy_delta_ci_low": acc - 0.92,
            "accuracy_delta_ci_high": acc - 0.88,
            "latency": {
                "1": {
                    "median_ms": lat,
                    "ci_low_ms": lat * 0.9,
                    "ci_high_ms": lat * 1.1,
                    "runs": 20,
                    "threads": 1,
                }
            },
            "per_class_accuracy": [acc, 1.0],
            "fp32_per_class_accuracy": [0.9, 1.0],
        },
        "environment": {"cpu": "TestCPU", "onnxruntime": "9.9"},
    }


@pytest.fixture()
def frame(tmp_path: Path) -> pd.DataFrame:
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put(record("base", ["fp32"] * 3, 400, 1.0, 0.9))
        store.put(record("int8", ["int8"] * 3, 100, 0.5, 0.89))  # smaller, faster, a bit worse
        store.put(record("fp16", ["fp16"] * 3, 200, 2.0, 0.9))  # smaller but slower
        store.put(record("bad", ["int8", "int4", "int8"], 150, 0.8, 0.5))  # dominated on size/acc by int8
        store.put(record("other", ["int8"] * 3, 50, 0.1, 0.99, model="n"))
        frame = store.to_frame()
        # to_frame() leaves the environment out; the dashboard attaches it the same way.
        frame["environment"] = [store.get(k)["environment"] for k in frame["key"]]
        return frame


def test_size_accuracy_front_and_baseline(frame: pd.DataFrame) -> None:
    info = pareto_plot_info(filter_results(frame, ["m"]), "size", "accuracy")
    by = {p.key: p for p in info.points}
    assert {k for k, p in by.items() if p.pareto} == {"int8", "fp16"}  # fp16: as accurate, half the size
    assert by["bad"].pareto is False and by["base"].baseline is True and by["base"].pareto is False
    assert info.front == ("int8", "fp16")  # ordered by size
    assert by["int8"].x == pytest.approx(100 / 1e3) and by["int8"].y == pytest.approx(89.0)  # kB
    assert info.trace_keys() == {"dominated": ("bad",), "pareto": ("int8", "fp16"), "baseline": ("base",)}


def test_relative_axes_and_honest_slowdown(frame: pd.DataFrame) -> None:
    info = pareto_plot_info(filter_results(frame, ["m"]), "latency", "accuracy", relative=True)
    by = {p.key: p for p in info.points}
    assert by["fp16"].x == pytest.approx(100.0)  # twice the FP32 latency: +100 %
    assert by["int8"].x == pytest.approx(-50.0) and by["int8"].y == pytest.approx(-1.0)
    assert "2.00× slower than FP32" in by["fp16"].hover
    assert "TestCPU" in by["fp16"].hover and "ONNX Runtime 9.9" in by["fp16"].hover
    assert "95% CI" in by["int8"].hover and "-1.00 pp" in by["int8"].hover


def test_model_without_baseline_has_no_relative_latency(frame: pd.DataFrame) -> None:
    info = pareto_plot_info(filter_results(frame, ["n"]), "latency", "accuracy", relative=True)
    assert info.points == () and info.missing == 1


def test_fronts_are_per_model(frame: pd.DataFrame) -> None:
    # "other" (model n) beats everything of model m, but must not knock m's front out.
    info = pareto_plot_info(frame, "size", "accuracy")
    assert {p.key for p in info.points if p.pareto} == {"int8", "fp16", "other"}


def test_precision_filter_keeps_baseline(frame: pd.DataFrame) -> None:
    kept = filter_results(frame, ["m"], ["int8"])
    assert set(kept["key"]) == {"base", "int8"}


def test_selection_maps_back_to_keys(frame: pd.DataFrame) -> None:
    info = pareto_plot_info(filter_results(frame, ["m"]), "size", "accuracy", selected="int8")
    fig = pareto_figure(info)
    assert list(fig.data[1].customdata) == ["int8", "fp16"]
    ring = fig.data[-1]  # the selected point gets a ring, drawn last so trace numbers stay put
    assert ring.name == "selected" and list(ring.customdata) == ["int8"]
    assert (
        selected_key(info.trace_keys(), {"selection": {"points": [{"curve_number": 0, "point_index": 0}]}})
        == "bad"
    )
    assert selected_key(info.trace_keys(), {"selection": {"points": [{"customdata": "fp16"}]}}) == "fp16"
    assert selected_key(info.trace_keys(), {"selection": {"points": []}}) is None


def test_grid_draws_each_plot_as_a_panel_of_one_figure(frame: pd.DataFrame) -> None:
    shown = filter_results(frame, ["m"])
    infos = (
        pareto_plot_info(shown, "size", "accuracy", selected="fp16"),
        pareto_plot_info(shown, "latency", "accuracy", relative=True, selected="fp16"),
    )
    grid = ParetoGridInfo(infos, ("Accuracy vs size", "Accuracy vs latency"))
    fig = pareto_grid_figure(grid)
    # Panel i owns data traces 3i..3i+2; the front lines and the rings follow all of them.
    kinds = ["dominated", "Pareto-optimal", "FP32 baseline"]
    assert [(t.name, t.xaxis, t.yaxis) for t in fig.data[:6]] == [
        *((k, "x", "y") for k in kinds),
        *((k, "x2", "y2") for k in kinds),
    ]
    tail = [(t.name, t.mode, t.xaxis) for t in fig.data[6:]]
    assert tail == [("front · m", "lines", "x"), ("front · m", "lines", "x2")] + [
        ("selected", "markers", "x"),
        ("selected", "markers", "x2"),
    ]
    # On latency, FP16 (twice as slow as FP32, no more accurate) drops off the front.
    keys = (("bad",), ("int8", "fp16"), ("base",), ("fp16", "bad"), ("int8",), ("base",))
    assert grid.trace_keys() == keys
    assert [tuple(t.customdata) for t in fig.data[:6]] == list(keys)
    # Each panel keeps its own axes: absolute size on the first, latency change vs FP32 on the second.
    # Sizes in kB: these models are under 100 kB (a 23 kB model's axis ran 0.015 to 0.02 MB).
    assert list(fig.data[1].x) == pytest.approx([100 / 1e3, 200 / 1e3])
    assert list(fig.data[3].x) == pytest.approx([100.0, -20.0])
    assert fig.layout.xaxis.title.text == "Model size (kB)"
    assert fig.layout.xaxis2.title.text == "Latency change vs FP32 (%)"
    assert fig.layout.yaxis2.title.text == "Accuracy change vs FP32 (percentage points)"
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # side by side, apart
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["<b>Accuracy vs size</b>", "<b>Accuracy vs latency</b>"]
    # One legend entry per kind, shared by the panels.
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == [*kinds, "front · m", "selected"]
    # Dominated points dimmed, the front highlighted, the baseline a star, on every panel.
    look = {"dominated": (0.35, "circle"), "Pareto-optimal": (1.0, "circle"), "FP32 baseline": (1.0, "star")}
    assert all((t.marker.opacity, t.marker.symbol) == look[t.name] for t in fig.data[:6])
    assert "int8 summary" in fig.data[4].hovertext[0] and "95% CI" in fig.data[4].hovertext[0]
    assert "2.00× slower than FP32" in fig.data[3].hovertext[0]
    # Fixed margins: what pushes them makes plotly.js draw every marker again.
    assert fig.layout.margin.autoexpand is False
    assert fig.layout.xaxis.automargin is False and fig.layout.yaxis2.automargin is False

    # A click on the second panel maps back to its result, by customdata or by (curve, index).
    def pick(point: dict[str, Any]) -> str | None:
        return selected_key(grid.trace_keys(), {"selection": {"points": [point]}})

    assert pick({"curve_number": 3, "point_index": 1}) == "bad"
    assert pick({"customdata": "int8"}) == "int8"
    assert pick({"curve_number": 7, "point_index": 0}) is None  # a line: no result


def test_grid_survives_an_equal_copy(frame: pd.DataFrame) -> None:
    # What lets plotly.js skip the redraw when a front end re-sends the figure as an equal copy:
    # no template, JSON lists (typed arrays compare by identity), a revision that follows the data.
    shown = filter_results(frame, ["m"])

    def grid(selected: str | None = None, relative: bool = False) -> ParetoGridInfo:
        info = pareto_plot_info(shown, "size", "accuracy", relative=relative, selected=selected)
        return ParetoGridInfo((info,), ("Accuracy vs size",))

    spec = json.loads(pio.to_json(pareto_grid_figure(grid())))
    assert "template" not in spec["layout"]
    assert all(isinstance(t[a], list) for t in spec["data"] for a in ("x", "y"))
    revisions = {
        pareto_grid_figure(g).layout.datarevision for g in (grid(), grid("int8"), grid(relative=True))
    }
    assert len(revisions) == 3
    assert pareto_grid_figure(grid()).layout.datarevision == spec["layout"]["datarevision"]


def test_grid_needs_a_title_per_panel(frame: pd.DataFrame) -> None:
    info = pareto_plot_info(filter_results(frame, ["m"]), "size", "accuracy")
    with pytest.raises(ValueError, match="one title per panel"):
        ParetoGridInfo((info, info), ("only one",))


def test_compare_tables(tmp_path: Path) -> None:
    a, b = record("a1", ["fp32", "int8", "int8"], 200, 1.0, 0.9), record("b1", ["int8"] * 3, 100, 2.0, 0.8)
    table = compare_table([a, b])
    assert table["size_vs_first_pct"].tolist() == pytest.approx([0.0, -50.0])
    assert table["latency_vs_first_pct"].tolist() == pytest.approx([0.0, 100.0])
    assert table["accuracy_vs_first_pp"].tolist() == pytest.approx([0.0, -10.0])
    diff = layer_differences([a, b])
    assert diff["layer"].tolist() == ["a"] and diff.iloc[0, 1:].tolist() == ["FP32", "INT8"]
    pc = per_class_table([a, b], ["cat", "dog"])
    assert pc["class"].tolist() == ["cat", "dog"] and pc.iloc[0, 1:].tolist() == pytest.approx([90, 90, 80])


def test_a_large_models_size_axis_is_in_mb(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put(record("base", ["fp32"] * 3, 2_400_000, 1.0, 0.9))
        store.put(record("int8", ["int8"] * 3, 600_000, 0.5, 0.89))
        info = pareto_plot_info(store.to_frame(), "size", "accuracy")
    assert info.x_title == "Model size (MB)" and sorted(p.x for p in info.points) == pytest.approx([0.6, 2.4])


def test_compare_gives_sizes_in_the_unit_the_largest_reads_best_in() -> None:
    """Browser QA: a 9 kB model's plans read "size (MB)" 0.009 and 0.003 in Compare."""
    small = [record("s1", ["fp32"] * 3, 9_000, 1.0, 0.9), record("s2", ["int8"] * 3, 2_600, 0.5, 0.9)]
    table = compare_table(small)
    assert table.attrs["size_unit"] == "kB" and table["size"].tolist() == pytest.approx([9.0, 2.6])
    large = [record("l1", ["fp32"] * 3, 2_400_000, 1.0, 0.9), record("l2", ["int8"] * 3, 60_000, 0.5, 0.9)]
    table = compare_table(large)
    assert table.attrs["size_unit"] == "MB" and table["size"].tolist() == pytest.approx([2.4, 0.06])


def test_each_models_front_has_its_own_line(frame: pd.DataFrame) -> None:
    # With several models shown, their fronts must not look alike (one colour made "front · m" and
    # "front · n" identical in the legend); a model's line looks the same in every panel.
    infos = tuple(pareto_plot_info(frame, x, "accuracy") for x in ("size", "latency"))
    fig = pareto_grid_figure(ParetoGridInfo(infos, ("a", "b")))
    looks = {(t.name, t.line.color, t.line.dash) for t in fig.data if t.mode == "lines"}
    by_model = {name: (color, dash) for name, color, dash in looks}
    assert set(by_model) == {"front · m", "front · n"} and len(looks) == 2
    assert by_model["front · m"][0] != by_model["front · n"][0]
    assert by_model["front · m"][1] != by_model["front · n"][1]  # told apart without colour too


def test_a_model_identity_keeps_one_network_of_a_reused_name(tmp_path: Path) -> None:
    # A model added under a removed one's name shares only its name with the old results.
    old, new = record("old", ["int8"] * 3, 100, 0.5, 0.89), record("new", ["int8"] * 3, 90, 0.4, 0.5)
    old.update(model_hash="h1", data_hash="d")
    new.update(model_hash="h2", data_hash="d")
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put(old)
        store.put(new)
        frame = with_derived(store.to_frame())
    assert set(filter_results(frame, ["m"])["key"]) == {"old", "new"}  # by name: every result
    assert list(filter_results(frame, [model_identity("m", "h2", "d")])["key"]) == ["new"]


def test_compare_table_without_labels_has_fidelity() -> None:
    base, int8 = record("b", ["fp32"] * 3, 400, 1.0, 0.9), record("q", ["int8"] * 3, 100, 0.5, 0.9)
    for r, sqnr in ((base, None), (int8, 31.25)):
        r["metrics"] = {
            **{k: v for k, v in r["metrics"].items() if "accuracy" not in k},
            "labelled": False,
            "agreement": 1.0 if sqnr is None else 0.95,
            "sqnr_db": sqnr,  # None: the outputs are FP32's own
            "kl_divergence": 0.0 if sqnr is None else 1e-3,
        }
    table = compare_table([base, int8])
    assert table["accuracy_pct"].isna().all()
    assert table["agreement_pct"].tolist() == pytest.approx([100.0, 95.0])
    assert table["sqnr_db"].tolist() == ["∞ (same outputs as FP32)", "31.2"]
    assert table["kl_divergence"].tolist() == pytest.approx([0.0, 1e-3])


def test_summaries_two_plans_share_get_their_key_and_others_stay_as_they_are() -> None:
    from engine.charts import distinct_summaries

    assert distinct_summaries(
        ["5 INT8", "3 INT4 · 2 FP32", "3 INT4 · 2 FP32", None], ["k1", "abcdef99", "123456xx", "k4"]
    ) == [
        "5 INT8",
        "3 INT4 · 2 FP32 (abcdef)",
        "3 INT4 · 2 FP32 (123456)",
        "",
    ]


def test_speed_against_fp32_is_the_plans_paired_ratio_and_says_when_it_is_noise(tmp_path: Path) -> None:
    """The QA case: FP32 timed against itself at 1.035 (before the FP32 plan became the reference),
    a plan at 1.09x FP32 (CI 1.05-1.14): its point said "= 1.09× FP32" and "1.05× slower"."""

    def timed(key: str, precs: list[str], ratio: float, low: float, high: float) -> dict[str, Any]:
        r = record(key, precs, 100, 1.45, 0.9)
        r["metrics"]["latency"]["1"].update(
            vs_fp32=ratio, vs_fp32_ci_low=low, vs_fp32_ci_high=high, fp32_ms=1.398
        )
        return r

    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put({**timed("base", ["fp32"] * 3, 1.035, 1.0, 1.07), "created_at": "2026-01-01T00:00:00"})
        store.put(timed("int4", ["int4"] * 3, 1.09, 1.05, 1.14))
        store.put(timed("fp16", ["fp16"] * 3, 1.02, 0.98, 1.05))
        frame = store.to_frame()
        frame["environment"] = [store.get(k)["environment"] for k in frame["key"]]
    out = with_derived(frame).set_index("key")
    assert out.loc["int4", "latency_change_pct"] == pytest.approx(9.0)
    assert out.loc["base", "latency_change_pct"] == 0.0  # the reference itself
    assert "= 1.09× FP32" in out.loc["int4", "hover"] and "1.09× slower than FP32" in out.loc["int4", "hover"]
    assert "no clear latency difference from FP32" in out.loc["fp16", "hover"]
    assert "smaller than FP32" not in out.loc["base", "hover"]  # FP32 is not compared with itself
    assert all(len(line) <= 120 for line in out.loc["int4", "hover"].split("<br>"))  # wrapped to fit


def test_compare_gives_each_change_against_the_first_with_its_interval() -> None:
    """Browser QA: 'accuracy vs first +0.96' and 'latency vs first -49.4' stood without intervals."""
    import numpy as np

    from engine.charts import hover_text
    from engine.measure import encode_scores

    rng = np.random.default_rng(0)
    first_correct = rng.random(2000) < 0.62
    second_correct = first_correct.copy()
    second_correct[rng.choice(2000, 60, replace=False)] ^= True  # a few examples flip either way
    a, b = record("a1", ["fp32"] * 3, 200, 1.0, 0.62), record("b1", ["int4"] * 3, 100, 2.0, 0.61)
    for r, correct in ((a, first_correct), (b, second_correct)):
        r["metrics"]["per_sample_correct"] = encode_scores(correct.astype(float))
    b["metrics"] |= {"perplexity": 3.5, "perplexity_ratio": 1.021}
    b["metrics"] |= {"perplexity_ratio_ci_low": 1.017, "perplexity_ratio_ci_high": 1.024}
    table = compare_table([a, b])
    low, high = (float(x) for x in table["accuracy_vs_first_ci_pp"].iloc[1].split(" to "))
    change = 100 * (second_correct.mean() - first_correct.mean())
    assert low < change < high and high - low < 3.0, (low, change, high)
    assert table["accuracy_vs_first_ci_pp"].iloc[0] == ""  # the first is the reference
    assert table["latency_vs_first_ci_pct"].iloc[1] == "+63.6 to +144.4"  # 1.8/1.1 - 1 to 2.2/0.9 - 1
    # Browser QA: FP32 read "latency 95% CI 2.740–2.740": the scale itself, no interval of its own.
    a["metrics"]["latency"]["1"].update(vs_fp32=1.0, vs_fp32_ci_low=1.0, vs_fp32_ci_high=1.0, fp32_ms=1.0)
    assert compare_table([a, b])["latency_ci_ms"].tolist()[0] == "the FP32 scale"
    assert table["perplexity"].iloc[1] == "3.500 (×1.021 vs FP32, 95% CI ×1.017 to ×1.024)"
    assert "perplexity 3.500 (×1.021" in hover_text({**b, "accuracy": 0.61, "accuracy_delta": -0.01})


def test_long_axis_titles_wrap_to_their_panel_and_the_legend_keeps_its_rows(frame: pd.DataFrame) -> None:
    """Browser QA at 1280x800: the three panels' x titles ran into each other, and the All models
    legend was clipped after 5 of its 8 entries (the margins are fixed)."""
    from engine.pareto_figure import MAIN_WIDTH_PX, wrapped

    assert wrapped("Latency, batch 1 (ms, median, timed against FP32)", 36) == (
        "Latency, batch 1 (ms, median, timed<br>against FP32)"
    )
    assert (
        wrapped("Share of FP32 time (%)<br>batch 1, this machine", 40)
        == "Share of FP32 time (%)<br>batch 1, this machine"
    )
    charts = (("size", "accuracy"), ("latency", "accuracy"), ("latency", "size"))
    one = pareto_grid_figure(
        ParetoGridInfo(
            tuple(pareto_plot_info(filter_results(frame, ["m"]), x, y) for x, y in charts), ("a", "b", "c")
        )
    )
    lo, hi = one.layout.xaxis2.domain
    chars = MAIN_WIDTH_PX * (hi - lo) / 7
    assert all(len(line) <= chars for line in one.layout.xaxis2.title.text.split("<br>"))
    renamed = frame.assign(model_name=[f"a model with a long name {i}" for i in range(len(frame))])
    many = pareto_grid_figure(
        ParetoGridInfo(tuple(pareto_plot_info(renamed, x, y) for x, y in charts), ("a", "b", "c"))
    )
    assert many.layout.margin.b > one.layout.margin.b and many.layout.height > one.layout.height


def test_changes_vs_fp32_are_drawn_with_their_intervals(frame: pd.DataFrame) -> None:
    """Browser QA: in the % change view the accuracy deltas had no error bars; the interval was only
    in the hover, so a plan 0.2 points ahead inside both intervals looked plainly better."""
    info = pareto_plot_info(filter_results(frame, ["m"]), "latency", "accuracy", relative=True)
    int8 = next(p for p in info.points if p.key == "int8")
    assert int8.y_interval == pytest.approx((-3.0, 1.0))  # record(): delta -1, CI acc-0.92 to acc-0.88
    fig = pareto_grid_figure(ParetoGridInfo((info,), ("a",)))
    pareto = next(t for t in fig.data if t.name == "Pareto-optimal")
    at = list(pareto.customdata).index("int8")
    assert pareto.error_y.arrayminus[at] == pytest.approx(2.0) and pareto.error_y.array[at] == pytest.approx(
        2.0
    )
    absolute = pareto_grid_figure(
        ParetoGridInfo((pareto_plot_info(filter_results(frame, ["m"]), "size", "accuracy"),), ("a",))
    )
    assert all(t.error_y.array is None for t in absolute.data)  # an accuracy is no change: no bar


def test_latency_changes_are_drawn_with_the_paired_intervals_and_dominated_bars_dimmed(
    tmp_path: Path,
) -> None:
    """Review: the latency error bars of the % change view were untested, and a dominated plan's bars
    were drawn at full strength under its dimmed marker."""
    paired = {"int8": (0.5, 0.4, 0.6), "bad": (0.8, 0.7, 0.9)}
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put(record("base", ["fp32"] * 3, 400, 1.0, 0.9))
        for key, precs, size, acc in (
            ("int8", ["int8"] * 3, 100, 0.89),
            ("bad", ["int8", "int4", "int8"], 150, 0.5),
        ):
            r = record(key, precs, size, paired[key][0], acc)
            ratio, low, high = paired[key]  # timed alternately with FP32 (1.0 ms): a ratio with its CI
            r["metrics"]["latency"]["1"].update(
                vs_fp32=ratio, vs_fp32_ci_low=low, vs_fp32_ci_high=high, fp32_ms=1.0
            )
            store.put(r)
        frame = store.to_frame()
    info = pareto_plot_info(filter_results(frame, ["m"]), "latency", "accuracy", relative=True)
    by = {p.key: p for p in info.points}
    assert by["int8"].x == pytest.approx(-50.0) and by["int8"].x_interval == pytest.approx((-60.0, -40.0))
    assert math.isnan(by["base"].x_interval[0])  # FP32 is the scale: no interval of its own
    fig = pareto_grid_figure(ParetoGridInfo((info,), ("a",)))
    traces = {t.name: t for t in fig.data if t.customdata is not None}
    front, dominated = traces["Pareto-optimal"], traces["dominated"]
    at = list(front.customdata).index("int8")
    assert front.error_x.arrayminus[at] == pytest.approx(10.0) and front.error_x.array[at] == pytest.approx(
        10.0
    )
    assert list(dominated.customdata) == ["bad"] and dominated.error_x.array[0] == pytest.approx(10.0)
    assert dominated.error_x.color.endswith(", 0.35)") and front.error_x.color.endswith(", 1.0)")


def test_the_fp32_points_hover_gives_its_accuracy_not_a_change_against_itself(frame: pd.DataFrame) -> None:
    """Review: the FP32 star read 'change vs FP32 +0.00 pp (95% CI +0.00 to +0.00)'."""
    out = with_derived(filter_results(frame, ["m"])).set_index("key")
    assert "accuracy 90.00%" in out.loc["base", "hover"] and "change vs FP32" not in out.loc["base", "hover"]
    assert "change vs FP32 -1.00 pp (95% CI -3.00 to +1.00)" in out.loc["int8", "hover"]
