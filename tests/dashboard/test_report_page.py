"""The Report page with AppTest: a real recommendation for digits_cnn (inline, quick timing) and a real
report built into the temporary data folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dashboard import cached, report_files, state
from engine.goal import parse_goal
from engine.render import RenderError
from engine.report import ensure_candidates
from engine.types import Plan, Precision
from tests.dashboard.conftest import app, wait_for_jobs

MODEL = "digits_cnn"
PAGE = "app_pages/report.py"


def _texts(elements: Any) -> str:
    """What the page says, as read: Markdown's escapes (digits\\_cnn) removed."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in elements))


def _open() -> Any:
    at = app(model=MODEL)
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _measured() -> None:
    """FP32 and every preset of the model in the store (served from it when already measured)."""
    r = cached.runner()
    ensure_candidates(r.engine, r.model(MODEL), r.settings())


def test_measuring_the_presets_gives_a_recommendation_with_intervals_and_caveats(home: Path) -> None:
    at = _open()
    assert f"Report · {MODEL}" in _texts(at.header)
    assert "Understood as: the smallest plan within 1 point of FP32 accuracy" in _texts(at.caption)
    # A fresh store: only the FP32 baseline (measured by the page) to choose from.
    assert "Only 1 measured plan(s)" in _texts(at.info)
    at.button(key=state.REPORT_MEASURE).click().run()
    assert not at.exception
    wait_for_jobs(at, timeout=600)  # measured in a job: the page reruns when it ends
    assert not at.exception
    assert state.REPORT_MEASURE not in [b.key for b in at.button]  # enough plans now

    headline = _texts(at.subheader)
    assert "Recommended" in headline
    markdown = [m.value for m in at.markdown]
    assert any("95% CI" in m for m in markdown)
    caveats = next(m for m in markdown if m.startswith("**Caveats**"))
    assert any("CPU" in line for line in caveats.splitlines()[1:])
    table = at.dataframe[0].value
    assert len(table) >= 3 and list(table["recommended"]).count("★") == 1
    chosen = table.loc[table["recommended"] == "★", "plan"].iloc[0]
    assert chosen in headline


def _only_the_baseline() -> None:
    """Take the model's plans but its FP32 baseline out of the store: the page offers the presets again."""
    r = cached.runner()
    for key in r.store.to_frame(MODEL, status=None)["key"]:
        if key != r.baseline_key(MODEL):
            r.store.delete(key)


def test_presets_that_failed_are_named_in_every_tab_until_they_are_measured(
    home: Path, monkeypatch: Any
) -> None:
    import engine.report

    real = engine.report.ensure_candidates

    def one_fails(
        engine: Any, bundle: Any, settings: Any = None, on_done: Any = None
    ) -> list[dict[str, Any]]:
        records = real(engine, bundle, settings, on_done=on_done)
        lost = next(r for r in records if r["plan_summary"].endswith(" INT8"))  # uniform INT8
        failed = dict(lost, status="failed", error="out of memory")
        engine.store.put(failed)  # as the engine records a plan whose worker ran out of memory
        return [failed if r is lost else r for r in records]

    _only_the_baseline()
    at = _open()
    monkeypatch.setattr(engine.report, "ensure_candidates", one_fails)
    at.button(key=state.REPORT_MEASURE).click().run()
    wait_for_jobs(at, timeout=600)
    assert not at.exception
    for page in (at, _open()):  # the tab that pressed, and a reload: the store says it
        assert "1 of 7 preset plans could not be measured" in _texts(page.warning)
        assert "out of memory" in _texts(page.warning)
    monkeypatch.undo()
    _measured()  # the failed preset measured since: nothing left to warn about
    at.run()
    assert not at.exception and "could not be measured" not in _texts(at.warning)


def test_presets_are_a_job_a_reload_sees_running_and_a_second_press_joins(
    home: Path, monkeypatch: Any
) -> None:
    import threading

    import engine.report

    real = engine.report.ensure_candidates
    first, release = threading.Event(), threading.Event()

    def held(engine: Any, bundle: Any, settings: Any = None, on_done: Any = None) -> list[dict[str, Any]]:
        def landed(name: str, record: dict[str, Any]) -> None:
            if on_done is not None:
                on_done(name, record)
            if not first.is_set():  # the first plan in (the stored baseline): hold the rest back
                first.set()
                release.wait(timeout=30)

        return real(engine, bundle, settings, on_done=landed)

    _only_the_baseline()
    runner = cached.runner()
    monkeypatch.setattr(engine.report, "ensure_candidates", held)
    at, other = _open(), _open()  # two tabs, both offering the button
    at.button(key=state.REPORT_MEASURE).click().run()
    assert not at.exception
    assert first.wait(timeout=60)
    jobs = [j for j in runner.store.list_jobs(["queued", "running"]) if j["kind"] == "presets"]
    assert [j["model_name"] for j in jobs] == [MODEL]
    button = at.button(key=state.REPORT_MEASURE)
    assert button.disabled and button.label == "Measuring the presets…"

    # The other tab still shows the button as it was: its press joins the running job.
    other.button(key=state.REPORT_MEASURE).click().run()
    assert not other.exception
    assert runner.submit_presets(MODEL) == jobs[0]["job_id"]
    assert [j["job_id"] for j in runner.store.list_jobs() if j["kind"] == "presets"][-1:] == [
        jobs[0]["job_id"]
    ]
    assert len([j for j in runner.store.list_jobs(["queued", "running"]) if j["kind"] == "presets"]) == 1

    # A reload (a new session) sees the job and which preset landed, of how many.
    reload = _open()
    progress = "\n".join(p.proto.text for p in reload.get("progress"))
    assert f"Measuring the preset plans of {MODEL}: 1 of 7 done, the latest fp32" in progress
    assert "are being measured (progress above)" in _texts(reload.info)
    assert reload.button(key=state.REPORT_MEASURE).disabled

    release.set()
    wait_for_jobs(reload, timeout=600)  # the app reruns when the job ends, in every tab
    for page in (reload, at):
        page.run()
        assert not page.exception
        assert state.REPORT_MEASURE not in [b.key for b in page.button]
        assert "Recommended" in _texts(page.subheader) and len(page.dataframe[0].value) >= 3


def test_a_goal_it_cannot_read_is_refused_in_plain_words(home: Path) -> None:
    at = _open()
    at.text_input(key=state.REPORT_GOAL).set_value("make it good").run()
    assert not at.exception
    error = _texts(at.error)
    assert "could not read the goal" in error and "smallest within 0.5% of FP32" in error
    assert state.REPORT_BUILD not in [b.key for b in at.button]


def test_a_goal_no_plan_meets_names_the_closest(home: Path) -> None:
    _measured()
    at = _open()
    at.text_input(key=state.REPORT_GOAL).set_value("most accurate under 1 kB").run()
    assert not at.exception
    warning = _texts(at.warning)
    assert "No measured plan of digits_cnn meets the goal" in warning and "Closest: " in warning


def _built(home: Path) -> dict[str, Any]:
    """The newest finished report of the model on disk, as the page finds it."""
    built = report_files.latest(home / "reports", MODEL, cached.model_id(MODEL))
    assert built is not None, sorted(p.name for p in (home / "reports").glob("*/*"))
    return built


def test_build_report_offers_the_files_for_download(home: Path) -> None:
    _measured()
    at = _open()
    at.button(key=state.REPORT_BUILD).click().run()
    assert not at.exception
    # Built in the background: the user goes elsewhere meanwhile, and the run that pressed the
    # button is long over when the report is done.
    at.switch_page("app_pages/compare.py").run()
    wait_for_jobs(at, timeout=300)
    assert not at.exception and not at.error

    built = _built(home)
    html = Path(built["html"])
    assert html.is_file() and html.parent.parent == home / "reports"
    assert "Quantization report" in html.read_text(encoding="utf-8")
    assert built["bundle"] and Path(built["bundle"]).is_file()  # a plan meets the default goal

    # Back on the page, in this session and in a new one (a reload): the files are offered.
    for page in (at, app(model=MODEL)):
        page.switch_page(PAGE).run()
        assert not page.exception
        labels = [b.label for b in page.get("download_button")]
        assert "Download report.html" in labels and "Download bundle.zip" in labels
        if built["render_error"] is None:  # Chromium ran: the PDF and the plot images too
            assert "Download report.pdf" in labels and "Download images.zip" in labels
        else:
            assert "No PDF or plot images" in _texts(page.warning)
        assert f"Built {built['built_at']}" in _texts(page.caption)
        assert "after this report was built" not in _texts(page.info)

    # A plan measured since is one the report does not show: the page says so.
    runner = cached.runner()
    layer = runner.engine.layers(runner.model(MODEL))[0].name
    runner.engine.evaluate(
        runner.model(MODEL), Plan(layers={layer: Precision.W8A16}), settings=runner.settings()
    )
    at.run()
    assert "1 plan was measured after this report was built: build it again" in _texts(at.info)


def test_without_chromium_the_html_and_bundle_are_still_offered(home: Path, monkeypatch: Any) -> None:
    import engine.report

    def no_chromium(*_args: Any, **_kwargs: Any) -> Any:
        raise RenderError("the PDF and the plot images need headless Chromium, and none was found on PATH")

    monkeypatch.setattr(engine.report, "render_in_subprocess", no_chromium)
    _measured()
    at = _open()
    at.button(key=state.REPORT_BUILD).click().run()
    wait_for_jobs(at, timeout=300)
    assert not at.exception
    assert "none was found on PATH" in _texts(at.warning)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download report.html", "Download bundle.zip"]


def test_a_build_that_fails_says_why_and_the_page_stays_usable(home: Path, monkeypatch: Any) -> None:
    import engine.report

    def full_disk(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("No space left on device\nsecond line")

    monkeypatch.setattr(engine.report, "build_report", full_disk)
    _measured()
    at = _open()
    before = set((home / "reports").glob("*/" + report_files.RECORD))
    at.button(key=state.REPORT_BUILD).click().run()
    wait_for_jobs(at)
    assert not at.exception
    error = _texts(at.error)
    assert "Building the report of digits_cnn stopped" in error
    assert "(OSError: No space left on device)" in error
    assert "second line" not in error and "press Build report again" in error
    assert set((home / "reports").glob("*/" + report_files.RECORD)) == before
    at.run()  # and it keeps working, and keeps saying why (a job ending elsewhere reruns the app like this)
    assert not at.exception and "Recommended" in _texts(at.subheader)
    assert "(OSError: No space left on device)" in _texts(at.error)


def test_a_second_build_of_the_model_from_another_tab_joins_the_running_one(
    home: Path, monkeypatch: Any
) -> None:
    import threading

    import engine.report

    release = threading.Event()

    def slow_build(*_args: Any, **_kwargs: Any) -> Any:
        release.wait(timeout=60)
        raise OSError("stopped by the test")

    monkeypatch.setattr(engine.report, "build_report", slow_build)
    _measured()
    runner = cached.runner()
    goal = parse_goal("smallest model within 1 point of FP32 accuracy")
    first = runner.submit_report(MODEL, goal, "a")
    second = runner.submit_report(MODEL, goal, "b")  # the other tab's press, while the first builds
    release.set()
    assert second == first
    at = _open()
    wait_for_jobs(at)
    assert [j["kind"] for j in runner.store.list_jobs() if j["job_id"] == first] == ["report"]


def test_a_build_a_restart_interrupted_says_to_build_again(home: Path) -> None:
    store = cached.runner().store
    store.upsert_job("report-interrupted", kind="report", model_name=MODEL, state="stale", progress=0.3,
                     message="Building the report of digits_cnn: rendering")  # fmt: skip
    at = _open()
    said = _texts(at.error)
    assert "interrupted because the app restarted. Press Build report again." in said
    assert "Press Evaluate again" not in said


def test_presets_that_stop_say_why_in_every_tab_and_the_button_is_offered_again(
    home: Path, monkeypatch: Any
) -> None:
    import engine.report

    def workers_gone(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the worker pool shut down\nsecond line")

    _only_the_baseline()
    at = _open()
    monkeypatch.setattr(engine.report, "ensure_candidates", workers_gone)
    at.button(key=state.REPORT_MEASURE).click().run()
    wait_for_jobs(at)
    for page in (at, _open()):  # the tab that pressed, and a reload
        assert not page.exception
        said = _texts(page.error)
        assert f"Measuring the preset plans of {MODEL} stopped after" in said
        assert "(RuntimeError: the worker pool shut down). What was measured is kept: press Measure the " \
            "presets first again" in said  # fmt: skip
        assert "second line" not in said
        button = page.button(key=state.REPORT_MEASURE)
        assert not button.disabled and button.label == "Measure the presets first"


def test_presets_a_restart_interrupted_say_to_press_again(home: Path) -> None:
    store = cached.runner().store
    store.upsert_job("presets-interrupted", kind="presets", model_name=MODEL, state="stale", progress=0.4,
                     message="Measuring the preset plans of digits_cnn: 3 of 7 done")  # fmt: skip
    said = _texts(_open().error)
    assert (
        "interrupted because the app restarted. Press Measure the presets first on the Report page again"
        in said
    )
    assert "Press Evaluate again" not in said
