"""Explore and Compare show the models listed now, as they are now: a model added under a removed one's
name, a removed model, a model without labels. Real inline evaluations of small added networks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import cached, state, upload_logic
from engine.types import Plan, Precision
from engine.user_models import models_dir
from tests.dashboard.conftest import app, wait_for_jobs
from tests.models import export, tiny_cnn

REUSED = "my-net"  # a model removed, then another network added under its name
OTHER = "other-net"  # two results, to switch Compare's model to
GONE = "gone-net"  # measured, then removed
BLIND = "blind-net"  # added with inputs but no labels
SCALAR = "scalar-net"  # no labels, and one output value per input (no classes to agree on)


def _texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


@pytest.fixture(scope="module")
def results(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Result keys, FP32 first, of: the removed and the current my-net, other-net, gone-net, blind-net."""
    tmp = tmp_path_factory.mktemp("nets")
    x = np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32)
    np.savez(tmp / "labelled.npz", input=x, labels=np.arange(120) % 10)
    np.savez(tmp / "unlabelled.npz", input=x)
    engine = cached.runner().engine

    def add_and_measure(
        name: str, seed: int, data: str, precisions: tuple[Precision, ...], network: bytes | None = None
    ) -> list[str]:
        # Each its own weights (seed): one network and data under two names would share result keys.
        path = tmp / f"{name}-{seed}.onnx"
        path.write_bytes(network or tiny_cnn(seed=seed)[0])
        engine.add_model(path, tmp / data, name=name)
        bundle = engine.model(name)
        return [engine.evaluate(bundle, Plan(default=p))["key"] for p in precisions]

    two = (Precision.FP32, Precision.INT8)
    out = {"old": add_and_measure(REUSED, 1, "labelled.npz", two)}
    engine.remove_model(REUSED)
    out["new"] = add_and_measure(REUSED, 2, "labelled.npz", (*two, Precision.FP16))
    out["other"] = add_and_measure(OTHER, 3, "labelled.npz", two)
    out["gone"] = add_and_measure(GONE, 4, "labelled.npz", two)
    engine.remove_model(GONE)
    out["blind"] = add_and_measure(BLIND, 5, "unlabelled.npz", two)
    torch.manual_seed(6)
    one_value = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    scalar = export(one_value.eval(), torch.from_numpy(x[:1]), "input")
    out["scalar"] = add_and_measure(SCALAR, 6, "unlabelled.npz", two, scalar)
    return out


def _figure(at: AppTest) -> dict:  # type: ignore[type-arg]
    charts = [e for e in at.main if getattr(e, "type", "") == "plotly_chart"]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def _drawn(at: AppTest) -> set[str]:
    return {k for t in _figure(at)["data"] for k in t.get("customdata") or []}


def _explore(model: str, **query: str) -> AppTest:
    at = app(model=model, **query)
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception, at.exception
    return at


def test_explore_shows_only_the_current_model_under_a_reused_name(results: dict[str, list[str]]) -> None:
    at = _explore(REUSED)
    assert _drawn(at) == set(results["new"])  # one FP32 star, one front: not the removed network's
    assert len(at.selectbox(key=state.EXPLORE_PICK).options) == len(results["new"])  # labels, not keys

    # All models: neither the earlier my-net nor the removed gone-net is mixed in.
    at.toggle(key=state.EXPLORE_MODELS).set_value(True).run()
    assert not at.exception
    drawn = _drawn(at)
    assert set(results["new"]) | set(results["other"]) <= drawn
    assert not drawn & {*results["old"], *results["gone"]}


def test_compare_offers_only_the_current_model_under_a_reused_name(results: dict[str, list[str]]) -> None:
    at = app(model=REUSED)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    # Options are labels: "<plan> (<key[:6]>)".
    offered = {o.rsplit("(", 1)[1].rstrip(")") for o in at.multiselect(key=state.COMPARE).options}
    assert offered == {k[:6] for k in results["new"]}


@pytest.mark.parametrize(
    ("kind", "said"),
    [("gone", f"{GONE} was removed"), ("old", f"an earlier model named {REUSED}, since replaced")],
)
def test_a_removed_models_plan_cannot_be_loaded(results: dict[str, list[str]], kind: str, said: str) -> None:
    # A link (or a selection kept from before the removal) still opens the result, for reference.
    at = _explore(REUSED, result=results[kind][1])
    assert at.subheader[0].value.endswith(GONE if kind == "gone" else REUSED)
    load = at.button(key="qd_load_plan")
    assert load.disabled and said in _texts(at.caption)
    # The current model's plans still load.
    at = _explore(REUSED, result=results["new"][1])
    assert not at.button(key="qd_load_plan").disabled


def test_explore_details_follow_the_precision_filter(results: dict[str, list[str]]) -> None:
    at = _explore(REUSED)
    int8 = results["new"][1]
    at.selectbox(key=state.EXPLORE_PICK).set_value(int8).run()
    assert at.subheader[0].value.startswith(cached.record(int8)["plan_summary"])
    at.multiselect(key=state.EXPLORE_PRECISIONS).set_value([]).run()  # only FP32 is drawn now
    assert not at.exception
    assert not at.subheader, "the hidden plan's details are still shown"
    assert "hidden by the precision filter" in _texts(at.info)
    at.multiselect(key=state.EXPLORE_PRECISIONS).set_value(["int8"]).run()
    assert at.subheader[0].value.startswith(cached.record(int8)["plan_summary"])


def test_compare_keeps_the_pick_per_model(results: dict[str, list[str]]) -> None:
    at = app(model=REUSED)
    at.switch_page("app_pages/compare.py").run()
    default = at.multiselect(key=state.COMPARE).value
    assert len(default) == 2
    third = next(k for k in results["new"] if k not in default)
    at.multiselect(key=state.COMPARE).select(third).run()
    picked = at.multiselect(key=state.COMPARE).value
    assert len(picked) == 3 and len(at.dataframe[0].value) == 3

    # Another page and back: Streamlit dropped the widget's value meanwhile.
    at.switch_page("app_pages/models.py").run()
    at.switch_page("app_pages/compare.py").run()
    assert at.multiselect(key=state.COMPARE).value == picked

    # Another model (two results: its default pair), then back.
    at.selectbox(key=state.MODEL).set_value(OTHER).run()
    assert not at.exception
    assert set(at.multiselect(key=state.COMPARE).value) == set(results["other"])
    assert "Pick at least two results" not in _texts(at.info)
    at.selectbox(key=state.MODEL).set_value(REUSED).run()
    assert at.multiselect(key=state.COMPARE).value == picked


def test_explore_without_labels_plots_agreement_and_says_why(results: dict[str, list[str]]) -> None:
    at = _explore(BLIND)
    captions = _texts(at.caption)
    assert "no labelled data, so accuracy cannot be measured" in captions
    assert "no FP32 baseline or metric to compare with" not in captions  # the baseline is there
    figure = _figure(at)
    assert figure["layout"]["yaxis"]["title"]["text"] == "Top-1 agreement with FP32 (%)"
    for axis in ("x", "x2"):  # both accuracy plots draw both plans, by agreement
        keys = {k for t in figure["data"] if t.get("xaxis") == axis for k in t.get("customdata") or []}
        assert keys == set(results["blind"])


def test_explore_plots_output_sqnr_for_a_model_with_one_output_value(results: dict[str, list[str]]) -> None:
    """Browser QA: a one-output model's plots drew 'top-1 agreement 100%' for every plan: one value
    has no classes to agree on. Its fidelity figure is the output SQNR; FP32 has none of its own."""
    at = _explore(SCALAR)
    captions = _texts(at.caption)
    assert "output SQNR against FP32 instead" in captions
    assert "not drawn" not in captions  # FP32's missing SQNR is said once, above
    figure = _figure(at)
    assert figure["layout"]["yaxis"]["title"]["text"] == "Output SQNR vs FP32 (dB)"
    assert figure["layout"]["annotations"][0]["text"] == "<b>SQNR vs size</b>"
    points = [t for t in figure["data"] if t.get("xaxis") == "x" and t.get("customdata")]
    keys = {k for t in points for k in t["customdata"]}
    assert keys == {results["scalar"][1]}  # the INT8 plan, by its SQNR
    hover = next(h for t in points for h in (t.get("hovertext") or t.get("text") or []))
    assert re.search(r"output SQNR vs FP32 \d+\.\d dB", hover), hover  # review: the y had no line

    at = app(model=SCALAR)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "agreement_pct" not in table.columns and "kl_divergence" not in table.columns
    assert float(table["sqnr_db"].iloc[1]) > 0
    said = _texts(at.caption)  # review: it named the figures a one-output model lacks
    assert "fidelity to FP32 instead: output SQNR." in said and "KL" not in said
    card = cached.cards()[SCALAR]
    assert "no labels: only fidelity to FP32 (output SQNR) is measured" in card["notes"]
    assert "(output SQNR) is measured on your data" in str(upload_logic.data_banner(card))
    blind = cached.cards()[BLIND]
    assert "(top-1 agreement, SQNR, KL divergence)" in str(upload_logic.data_banner(blind))
    assert card["scores_classes"] is False and blind["scores_classes"] is True  # facts; words are the UI's


def test_compare_without_labels_shows_fidelity_not_none(results: dict[str, list[str]]) -> None:
    at = app(model=BLIND)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "accuracy_pct" not in table.columns, "accuracy cells would read None"
    assert table["agreement_pct"].iloc[0] == pytest.approx(100.0)  # FP32 agrees with itself
    assert table["sqnr_db"].iloc[0].startswith("∞") and float(table["sqnr_db"].iloc[1]) > 0
    assert table["kl_divergence"].notna().all()
    assert "Accuracy: n/a (no labels)" in _texts(at.caption)
    assert "instead: top-1 agreement, SQNR, KL divergence." in _texts(at.caption)
    assert "accuracy is compared example by example" not in _texts(at.caption)  # there is none


def test_sensitivity_without_labels_is_drawn_by_output_sqnr(results: dict[str, list[str]]) -> None:
    at = app(model=BLIND)
    at.session_state[state.SENS_PRECISIONS] = [Precision.INT8.value]
    at.switch_page("app_pages/search.py").run()
    at.button(key=state.SENS_RUN).click().run()
    wait_for_jobs(at)
    assert not at.exception
    assert f"{BLIND} has no labelled evaluation data" in _texts(at.info)
    charts = [e for e in at.main if getattr(e, "type", "") == "plotly_chart"]
    figure = json.loads(charts[0].proto.spec)
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("Output SQNR vs FP32 (dB")
    bars = [t for t in figure["data"] if t["type"] == "bar" and t.get("xaxis", "x") == "x"]
    drawn = sum(len(t["x"]) for t in bars)
    assert drawn >= 1 and all(isinstance(v, float) for t in bars for v in t["x"])
    assert "output SQNR (most sensitive layers first)" in at.selectbox(key=state.SENS_SORT).options


def test_a_model_whose_files_cannot_be_read_still_shows_its_results(results: dict[str, list[str]]) -> None:
    # Last in the module: it deletes other-net's model file. A page that must load the model to
    # know its identity falls back to its name instead of failing.
    runner = cached.runner()
    (models_dir(runner.engine.home) / OTHER / "model.onnx").unlink()
    cached.models_changed(OTHER)  # as after a restart: nothing of it cached (its baseline key either)
    at = _explore(OTHER)
    figure = _figure(at)
    keys = {k for t in figure["data"] if t.get("xaxis") == "x" for k in t.get("customdata") or []}
    assert keys == set(results["other"])
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 2


def test_loading_a_plan_loads_the_calibration_it_was_measured_with(results: dict[str, list[str]]) -> None:
    """Browser QA: 'Load into plan editor' on an Entropy result left the Plan page's picker at MinMax,
    so Evaluate measured another plan (the MinMax one). The calibration is kept with the draft too."""
    from dashboard import drafts
    from engine.types import CalibrationMethod

    model = "digits_cnn"  # a sample model with a calibration split of its own
    runner = cached.runner()
    entropy = runner.engine.evaluate(
        runner.model(model), Plan(default=Precision.INT8), settings=runner.settings(CalibrationMethod.ENTROPY)
    )
    assert entropy["status"] == "ok", entropy["error"]
    at = _explore(model, result=entropy["key"])
    assert at.subheader[0].value.startswith("5 INT8 · Entropy calibration")
    at.button(key="qd_load_plan").click().run()
    assert not at.exception
    picker = at.selectbox(key=state.calibration_key(model))  # on the Plan page now
    assert picker.value == CalibrationMethod.ENTROPY
    assert "Measured: " in _texts(at.info)  # the very result loaded, not a MinMax plan still to measure
    kept = drafts.load(runner.engine.home, cached.model_id(model), cached.layers(model))
    assert kept is not None and kept.calibration == CalibrationMethod.ENTROPY  # a reload keeps it


def test_explore_does_not_show_another_models_result_as_the_selected_plan(
    results: dict[str, list[str]],
) -> None:
    """Browser QA: a plan selected on one model's Explore stayed the selected plan (its details, and
    result= in every page's URL) after the sidebar switched to another model; a link naming one model
    and another's result did the same, and Load switched the sidebar back."""
    blind = results["blind"][1]
    at = _explore(BLIND)
    at.selectbox(key=state.EXPLORE_PICK).set_value(blind).run()
    assert at.subheader[0].value.endswith(BLIND) and at.query_params["result"] == blind
    at.selectbox(key=state.MODEL).set_value(REUSED).run()
    assert not at.exception
    assert not at.subheader, "another model's plan is shown as this one's"
    assert "result" not in at.query_params
    assert at.selectbox(key=state.EXPLORE_PICK).value is None

    # A link naming this model and another current model's result.
    at = _explore(REUSED, result=blind)
    assert not at.subheader and "qd_load_plan" not in [b.key for b in at.button]
    assert f"is a result of {BLIND}, not of {REUSED}" in _texts(at.info)
    at.selectbox(key=state.MODEL).set_value(BLIND).run()  # as the page says: that model shows it
    assert at.subheader[0].value.endswith(BLIND) and at.query_params["result"] == blind

    # With All models on, a plan of another model is picked and shown, and loads into its own editor.
    mine = results["new"][1]
    at.toggle(key=state.EXPLORE_MODELS).set_value(True).run()
    at.selectbox(key=state.EXPLORE_PICK).set_value(mine).run()
    assert at.subheader[0].value.endswith(REUSED)
    at.button(key="qd_load_plan").click().run()
    assert not at.exception
    assert at.session_state[state.MODEL] == REUSED and at.query_params["result"] == mine


def test_the_selected_fp32_plans_accuracy_is_given_without_a_change_against_itself(
    results: dict[str, list[str]],
) -> None:
    """Review: Explore's caption for the FP32 plan read '+0.00 pp vs FP32 (95% CI +0.00 to +0.00)'."""
    at = app(model=OTHER, result=results["other"][0])
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    (said,) = [c for c in _texts(at.caption).splitlines() if c.startswith("Accuracy: ")]
    assert re.fullmatch(r"Accuracy: \d+\.\d\d%", said), said
    at = app(model=OTHER, result=results["other"][1])  # INT8: its change, with the interval
    at.switch_page("app_pages/explore.py").run()
    assert "pp vs FP32 (95% CI " in _texts(at.caption)
