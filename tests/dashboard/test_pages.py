"""Page logic with AppTest: real inline evaluations of digits_cnn in a temporary data folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dashboard import cached, state
from engine.types import CalibrationMethod, Precision
from tests.dashboard.conftest import app, wait_for_jobs

MODEL = "digits_cnn"


def _texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


def test_models_page_shows_card_layers_and_measured_baseline(home: Path) -> None:
    at = app(model=MODEL)
    at.run()
    assert not at.exception
    assert at.subheader[0].value == MODEL
    layer_table = at.dataframe[1].value
    # Every layer of digits_cnn takes every precision (INT4 too: Convs per output channel).
    assert len(layer_table) == 5 and all("INT4" in a for a in layer_table["accepts"])
    assert not "".join(layer_table["cannot take"])
    wait_for_jobs(at)  # the page started the FP32 baseline in the background
    assert not at.exception
    # What the page and the jobs say instead of the figures, should they be missing.
    jobs = [(j["state"], j["message"]) for j in cached.runner().store.list_jobs()]
    said = f"page: {_texts([*at.warning, *at.info, *at.error])!r}; jobs: {jobs}"
    assert any(m.label == "Size" for m in at.metric), said
    assert any(c.value.startswith("Latency at batch 1:") and "ONNX Runtime" in c.value for c in at.caption)


def test_plan_preset_edit_estimate_and_evaluate(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()
    assert not at.exception
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Plan"] == "5 INT8"
    assert float(metrics["Estimated compression vs FP32"].rstrip("×")) > 3

    # An edit in the table is kept (one a layer cannot take is reverted: see test_upload_page).
    editor_key = at.data_editor[0].key
    at.session_state[editor_key] = {
        "edited_rows": {"1": {"precision": "FP32"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception and not at.warning
    assert {m.label: m.value for m in at.metric}["Plan"] == "4 INT8 · 1 FP32"

    at.button(key="qd_evaluate").click().run()
    assert not at.exception
    wait_for_jobs(at)
    store = cached.runner().store
    done = [j for j in store.list_jobs(["done"]) if j["model_name"] == MODEL]
    record = store.get(done[-1]["result_key"])
    assert record["status"] == "ok" and record["plan_summary"] == "4 INT8 · 1 FP32"
    # The outcome in all three objectives, not accuracy alone (browser QA), with its machine.
    said = _texts(at.info)
    assert said.startswith("Measured: 4 INT8 · 1 FP32 · ") and "× smaller than FP32" in said
    assert re.search(
        r"latency at batch 1 \d+\.\d{3} ms \(95% CI .*\), \d\.\d\d× FP32, on .*ONNX Runtime", said
    )
    assert f"accuracy {100 * record['metrics']['accuracy']:.2f}%" in said

    # The same plan with another calibration method is another result, named as such.
    at.selectbox(key=state.calibration_key(MODEL)).set_value(CalibrationMethod.PERCENTILE).run()
    assert not at.info  # not measured with Percentile yet
    at.button(key="qd_evaluate").click().run()
    wait_for_jobs(at)
    done = [j for j in store.list_jobs(["done"]) if j["model_name"] == MODEL]
    record = store.get(done[-1]["result_key"])
    assert record["plan_summary"] == "4 INT8 · 1 FP32 · Percentile calibration"
    assert record["metrics"]["settings"]["calibration"] == "percentile"


def test_show_it_on_explore_keeps_the_model(home: Path) -> None:
    # The model is not the first one listed: a page switch that lost it would show that one.
    assert list(cached.cards())[0] != MODEL
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("fp32").run()
    at.button(key="qd_apply_preset").click().run()
    said = _texts(at.info)
    assert (
        "Measured: 5 FP32 · accuracy " in said and "smaller than FP32" not in said and "× FP32," not in said
    )
    assert (
        "pp vs FP32" not in said and "(the FP32 scale the plans are timed against)" in said
    )  # review: no 0-wide CIs
    at.button(key="qd_show_known").click().run()
    assert not at.exception
    assert at.session_state[state.MODEL] == MODEL and at.query_params["model"] == MODEL
    assert at.subheader[0].value.startswith("5 FP32")
    assert not next(m for m in at.metric if m.label == "Size").delta  # not "1.00× smaller" than itself


def test_explore_plots_select_link_and_download(home: Path) -> None:
    store = cached.runner().store
    frame = store.to_frame()
    key = frame.loc[frame["plan_summary"] == "4 INT8 · 1 FP32", "key"].iloc[0]
    at = app(model=MODEL)
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    charts = [e for e in at.main if getattr(e, "type", "") == "plotly_chart"]
    assert len(charts) == 1  # the three plots are panels of one figure
    figure = json.loads(charts[0].proto.spec)
    for axis in ("x", "x2", "x3"):
        keys = [k for t in figure["data"] if t.get("xaxis") == axis for k in t.get("customdata") or []]
        assert key in keys and cached.baseline_key(MODEL) in keys

    at.selectbox(key="qd_explore_pick").set_value(key).run()
    assert not at.exception
    assert at.query_params["result"] == key and at.query_params["model"] == MODEL
    assert at.subheader[0].value.startswith("4 INT8 · 1 FP32")
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download plan JSON", "Download quantized ONNX"]
    assert "ONNX Runtime" in _texts(at.caption)

    # A copied link reopens the same view.
    again = app(model=MODEL, result=key)
    again.switch_page("app_pages/explore.py").run()
    assert again.subheader[0].value.startswith("4 INT8 · 1 FP32")


def test_compare_shows_deltas_and_differing_layers(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    metrics, diff, per_class = (d.value for d in at.dataframe[:3])
    assert len(metrics) == 2 and metrics["size_vs_first_pct"].iloc[1] < -50  # INT8 is far smaller than FP32
    assert len(diff) == 4  # four layers went INT8, one stayed FP32
    assert len(per_class) == 10


def test_a_failed_job_is_shown_in_plain_words(home: Path) -> None:
    store = cached.runner().store
    store.upsert_job(
        "eval-broken",
        kind="evaluate",
        model_name=MODEL,
        state="failed",
        message="Evaluating X failed: Y. Try Z.",
    )
    at = app(model=MODEL)
    at.run()
    assert "Evaluating X failed: Y. Try Z." in _texts(at.error)
    assert not at.exception


def test_values_set_on_a_page_are_there_after_visiting_another(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page("app_pages/search.py").run()
    at.number_input(key=state.SEARCH_BUDGET).set_value(3)
    at.number_input(key=state.SEARCH_MAX_DROP).set_value(1.0)
    at.multiselect(key=state.SEARCH_PRECISIONS).set_value(["int8"])
    at.button(key=state.SEARCH_RUN).click().run()  # a form: its values count once submitted
    wait_for_jobs(at)
    at.switch_page("app_pages/report.py").run()
    goal = "fastest model within 2 points of FP32 accuracy"
    at.text_input(key=state.REPORT_GOAL).set_value(goal).run()
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    at.selectbox(key=state.calibration_key(MODEL)).set_value(CalibrationMethod.ENTROPY).run()
    at.selectbox(key="qd_preset").set_value("fp32").run()
    at.button(key="qd_apply_preset").click().run()  # an FP32 plan hides the calibration picker
    at.switch_page("app_pages/explore.py").run()
    at.run()

    at.switch_page("app_pages/search.py").run()
    assert not at.exception
    assert at.number_input(key=state.SEARCH_BUDGET).value == 3
    assert at.number_input(key=state.SEARCH_MAX_DROP).value == 1.0
    assert at.multiselect(key=state.SEARCH_PRECISIONS).value == ["int8"]
    # A later rerun (a job's end reruns the app) sends no value: what the user is typing stays.
    at.run()
    assert not at.number_input(key=state.SEARCH_BUDGET).proto.set_value
    at.switch_page("app_pages/report.py").run()
    assert at.text_input(key=state.REPORT_GOAL).value == goal
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    assert at.selectbox(key=state.calibration_key(MODEL)).value == CalibrationMethod.ENTROPY


def test_a_link_to_a_model_that_is_not_here_says_so(home: Path) -> None:
    at = app(model="nope")
    at.run()
    assert not at.exception
    shown = at.session_state[state.MODEL]
    assert "The link names the model 'nope', which is not here" in _texts(at.sidebar.warning)
    assert f"showing {shown} instead" in _texts(at.sidebar.warning)
    at.selectbox(key=state.MODEL).set_value(MODEL).run()  # a model picked: the note has done its job
    assert not at.sidebar.warning


def test_a_link_with_only_a_result_opens_that_results_model(home: Path) -> None:
    store = cached.runner().store
    key = store.to_frame(MODEL)["key"].iloc[0]
    at = app(result=key)
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    assert at.session_state[state.MODEL] == MODEL and at.query_params["model"] == MODEL
    assert at.subheader[0].value.endswith(f"· {MODEL}")


def test_the_plan_being_edited_survives_a_reload(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("int4-weights").run()
    at.button(key="qd_apply_preset").click().run()
    at.selectbox(key=state.ONE_LAYER).set_value("/conv1/Conv").run()
    layer_index = [x.name for x in cached.layers(MODEL)].index("/conv1/Conv")
    at.selectbox(key=state.one_precision_key(layer_index)).set_value(Precision.FP16).run()
    at.button(key="qd_apply_one").click().run()
    edited = {m.label: m.value for m in at.metric}["Plan"]
    assert edited == "4 INT4 · 1 FP16"

    # A reload is a new session: nothing of the old one's state, the same plan on the page.
    again = app(model=MODEL)
    again.switch_page("app_pages/plan.py").run()
    assert not again.exception
    assert {m.label: m.value for m in again.metric}["Plan"] == edited


def test_a_kept_plan_that_does_not_fit_the_model_is_ignored(tmp_path: Path) -> None:
    from dashboard import drafts

    layers = cached.layers(MODEL)
    names = [x.name for x in layers]
    drafts.save(tmp_path, "m@1/2", {n: "int8" for n in names}, CalibrationMethod.ENTROPY)
    kept = drafts.load(tmp_path, "m@1/2", layers)
    assert kept is not None and kept.assignment == {n: "int8" for n in names}
    assert kept.calibration is CalibrationMethod.ENTROPY
    assert drafts.load(tmp_path, "m@other/2", layers) is None  # another network under the name
    drafts.save(tmp_path, "m@1/2", {n: "int8" for n in names[1:]})  # a layer missing
    assert drafts.load(tmp_path, "m@1/2", layers) is None
    drafts.save(tmp_path, "m@1/2", {n: "no-such-precision" for n in names})
    assert drafts.load(tmp_path, "m@1/2", layers) is None


def test_the_kept_plan_comes_back_with_its_calibration(home: Path) -> None:
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    at.selectbox(key=state.calibration_key(MODEL)).set_value(CalibrationMethod.ENTROPY).run()
    assert not at.exception

    again = app(model=MODEL)  # a reload: the plan and the calibration it is to be measured with
    again.switch_page("app_pages/plan.py").run()
    assert not again.exception
    assert {m.label: m.value for m in again.metric}["Plan"] == "5 INT8"
    assert again.selectbox(key=state.calibration_key(MODEL)).value is CalibrationMethod.ENTROPY


def test_each_models_calibration_is_its_own_after_a_reload(home: Path) -> None:
    other = "digits_mobilenet"
    at = app(model=MODEL)
    at.switch_page("app_pages/plan.py").run()
    for model, method in ((MODEL, CalibrationMethod.ENTROPY), (other, CalibrationMethod.PERCENTILE)):
        at.session_state[state.MODEL] = model  # as the sidebar picks it
        at.run()
        at.selectbox(key="qd_preset").set_value("int8").run()
        at.button(key="qd_apply_preset").click().run()
        at.selectbox(key=state.calibration_key(model)).set_value(method).run()
        assert not at.exception

    again = app(model=MODEL)  # a reload, then each model in turn
    again.switch_page("app_pages/plan.py").run()
    assert again.selectbox(key=state.calibration_key(MODEL)).value is CalibrationMethod.ENTROPY
    again.session_state[state.MODEL] = other
    again.run()
    assert not again.exception
    assert again.selectbox(key=state.calibration_key(other)).value is CalibrationMethod.PERCENTILE


def test_a_plan_that_cannot_be_kept_on_disk_is_said_so_and_still_edited(home: Path) -> None:
    blocked = home / "drafts"
    moved = home / "drafts-aside"
    if blocked.exists():
        blocked.rename(moved)
    blocked.write_text("a file where the drafts folder goes: nothing can be written in it")
    try:
        at = app(model=MODEL)
        at.switch_page("app_pages/plan.py").run()
        at.selectbox(key="qd_preset").set_value("fp16").run()
        at.button(key="qd_apply_preset").click().run()
        assert not at.exception
        assert "could not be kept on disk" in _texts(at.warning)
        assert {m.label: m.value for m in at.metric}["Plan"] == "5 FP16"  # the edit stands
    finally:
        blocked.unlink()
        if moved.exists():
            moved.rename(blocked)


def test_an_edit_in_a_tab_left_on_an_older_plan_lands_on_the_newer_one(home: Path) -> None:
    """The QA case: tab 2 shows the kept plan, tab 1 applies a preset, tab 2 sets one layer: tab 1's
    preset was overwritten by tab 2's older plan, without a word."""
    first, second = app(model=MODEL), app(model=MODEL)
    for tab in (first, second):
        tab.switch_page("app_pages/plan.py").run()
    first.selectbox(key="qd_preset").set_value("int4-weights").run()
    first.button(key="qd_apply_preset").click().run()
    assert {m.label: m.value for m in first.metric}["Plan"] == "5 INT4"

    # Its next run (here picking a layer) takes tab 1's plan, and says so.
    second.selectbox(key=state.ONE_LAYER).set_value("/conv1/Conv").run()
    assert "changed in another tab" in _texts(second.info)
    assert {m.label: m.value for m in second.metric}["Plan"] == "5 INT4"
    layer_index = [x.name for x in cached.layers(MODEL)].index("/conv1/Conv")
    second.selectbox(key=state.one_precision_key(layer_index)).set_value(Precision.FP16).run()
    assert "changed in another tab" not in _texts(second.info)  # said once
    second.button(key="qd_apply_one").click().run()
    assert not second.exception
    assert {m.label: m.value for m in second.metric}["Plan"] == "4 INT4 · 1 FP16"  # on tab 1's plan
    first.run()
    assert {m.label: m.value for m in first.metric}["Plan"] == "4 INT4 · 1 FP16"


def test_a_press_in_a_tab_left_on_an_older_plan_says_whose_plan_it_changed(home: Path) -> None:
    first, second = app(model=MODEL), app(model=MODEL)
    for tab in (first, second):
        tab.switch_page("app_pages/plan.py").run()
    layer_index = [x.name for x in cached.layers(MODEL)].index("/conv1/Conv")
    second.selectbox(key=state.ONE_LAYER).set_value("/conv1/Conv").run()
    second.selectbox(key=state.one_precision_key(layer_index)).set_value(Precision.FP16).run()
    first.selectbox(key="qd_preset").set_value("int8").run()
    first.button(key="qd_apply_preset").click().run()
    second.button(key="qd_apply_one").click().run()  # the press is the first run to see tab 1's plan
    assert {m.label: m.value for m in second.metric}["Plan"] == "4 INT8 · 1 FP16"
    assert "changed in another tab" in _texts(second.warning)


def test_a_language_model_is_described_by_its_sequences_and_vocabulary(home: Path) -> None:
    """Browser QA: char_transformer read 'Evaluation samples 256' (sequences of 64 characters, 16,384
    predictions) and 'Classes 96' (its characters)."""
    at = app(model="char_transformer")
    at.run()
    assert not at.exception
    metrics = {m.label: m for m in at.metric}
    assert metrics["Evaluation sequences"].value == "256" and "16,384 next-token predictions" in str(
        metrics["Evaluation sequences"].help
    )
    assert metrics["Vocabulary (tokens)"].value == "96" and "Classes" not in metrics


def test_an_evaluation_says_what_its_plan_counts_and_the_slow_first_calibration(home: Path) -> None:
    """Browser QA: 'Evaluating 25 FP32 on char_transformer' (25 what?), and an Entropy evaluation sat
    at the bar's start for 80 s with nothing saying it was calibrating."""
    from engine.types import Plan

    at = app(model=MODEL)
    at.run()
    runner = cached.runner()
    said = {}
    for precision in (Precision.INT8, Precision.FP16):
        job_id = runner.submit(MODEL, Plan(default=precision), calibration=CalibrationMethod.ENTROPY)
        said[precision] = next(j["message"] for j in runner.store.list_jobs() if j["job_id"] == job_id)
        wait_for_jobs(at)
    assert said[Precision.INT8].startswith("Evaluating 5 INT8 · Entropy calibration on digits_cnn (5 layers)")
    assert "(Entropy calibration) are computed once per model and method" in said[Precision.INT8]
    assert "calibration" not in said[Precision.FP16]  # FP16 needs no activation ranges
