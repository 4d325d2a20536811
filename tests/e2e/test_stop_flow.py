"""Stop on a sensitivity pass's progress bar, in Chromium against a real `streamlit run` with Dask workers.

Start the pass on digits_mobilenet and press Stop once the bar says a few plans have landed: the page
says "Stopping", then the bar and its button go. The job ended as asked for (done, not failed), with
part of its plans stored. The plans still in the workers were cancelled (engine.jobs kills a worker
running one, and its nanny starts a fresh one): a second pass then runs to its end on those workers,
measuring the rest.

Not digits_cnn: its 22 plans take 3 to 7 s on two workers, over before a browser whose bar refreshes
every second can press Stop part way (and with Entropy calibration every plan but the FP32 one waits
for the calibration in the workers, which a Stop does not cut short: it acts when the next plan
lands). digits_mobilenet's 106 plans land every second or two over about a minute.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from engine.store import ResultStore
from tests.e2e.conftest import start_server
from tests.e2e.test_dashboard_flow import click, wait_idle
from tests.e2e.test_faults import WATCH_EXCEPTIONS, assert_no_exception

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
MODEL = "digits_mobilenet"
BAR = "[data-testid=stProgress]"
STOP = "[class*=st-key-qd_stop_]"  # the Stop beside a stoppable job's bar (key qd_stop_<job id>)
ERROR = "[data-testid=stAlertContentError]"  # a failed job's message, among others
INFO = "[data-testid=stAlertContentInfo]"  # a stopped job's message
MEASURED = re.compile(r"(\d+) of (\d+) plans measured")
# Set once "⏹ Stopping" is drawn, even if the job ends (and the bar goes) before a look could see it.
WATCH_STOPPING = """
new MutationObserver(() => {
    if (document.body && document.body.textContent.includes('⏹ Stopping')) window.__qdStopping = true;
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def sensitivity_jobs(store: ResultStore) -> list[dict[str, Any]]:
    return [j for j in store.list_jobs() if j["kind"] == "sensitivity"]


def wait_measured(page: Any, at_least: int, timeout_s: float) -> tuple[int, int]:
    """Wait until the progress bar says at least `at_least` plans measured; (measured, total)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = MEASURED.search(" ".join(page.locator(BAR).all_inner_texts()))
        if found and int(found[1]) >= at_least:
            return int(found[1]), int(found[2])
        assert time.monotonic() < deadline, f"the bar never said {at_least}+ plans measured"
        page.wait_for_timeout(100)


def assert_no_error(page: Any) -> None:
    assert_no_exception(page)  # none drawn at any time, nor a traceback
    errors = page.locator(ERROR).all_inner_texts()
    assert not errors, errors


def test_stop_a_sensitivity_pass_then_run_it_to_the_end(
    browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.add_init_script(WATCH_EXCEPTIONS)
    page.add_init_script(WATCH_STOPPING)
    store: ResultStore | None = None
    try:
        page.goto(f"{server.url}/search?model={MODEL}")
        page.get_by_role("heading", name=f"Sensitivity & search · {MODEL}").wait_for(timeout=120_000)
        page.get_by_text("Not measured yet").wait_for(timeout=60_000)
        wait_idle(page)
        store = ResultStore(home / "results.sqlite")  # the app's, created by now
        click(page, "qd_sens_run")

        # A few plans in (the FP32 and all-INT8 ones come first), most still to come: press Stop.
        measured, total = wait_measured(page, 5, timeout_s=120)
        assert measured < total, f"the pass ended ({measured} of {total}) before Stop could be pressed"
        page.locator(STOP).get_by_role("button").first.click()
        pressed = time.monotonic()
        page.wait_for_function("() => window.__qdStopping === true", timeout=10_000)
        # It ends when the next plan lands; the plans still in the workers are dropped, not waited for.
        page.locator(BAR).first.wait_for(state="detached", timeout=60_000)
        page.locator(STOP).first.wait_for(state="detached", timeout=10_000)  # the rerun that drops the bar
        stopped_in = time.monotonic() - pressed

        (job,) = sensitivity_jobs(store)
        assert job["state"] == "done", job["message"]  # asked for: not a failure
        assert job["outcome"] == "stopped", job
        assert "stopped after" in job["message"] and "as you asked" in job["message"], job["message"]
        assert "press Run sensitivity pass again to continue" in job["message"], job["message"]
        kept = store.count()
        assert measured <= kept < total, (measured, kept, total)  # what landed stays; the rest was dropped
        # The page says so (not as an error) until dismissed: what it kept, and how to go on.
        page.locator(INFO, has_text="as you asked").wait_for(timeout=30_000)
        wait_idle(page)
        assert_no_error(page)
        page.screenshot(path=str(artifacts / "e2e-stop-2-stopped.png"), full_page=True)

        # The workers are free again: the same button runs the pass to its end, measuring the rest.
        click(page, "qd_sens_run")
        started = time.monotonic()
        while len(jobs := sensitivity_jobs(store)) < 2 or jobs[-1]["state"] == "running":
            assert time.monotonic() - started < 240, f"the second pass did not end in 240 s: {jobs[-1]}"
            page.wait_for_timeout(500)
        again = jobs[-1]
        assert again["state"] == "done" and "as you asked" not in again["message"], again["message"]
        assert again["outcome"] is None, again
        assert re.search(r"(\d+) of \1 probes measured$", again["message"]), again["message"]
        assert store.count() == total, (store.count(), total)
        page.locator(BAR).first.wait_for(state="detached", timeout=30_000)
        page.get_by_text(re.compile(r"^(\d+) of \1 probes measured in this view")).wait_for(timeout=30_000)
        wait_idle(page)
        assert_no_error(page)
        page.screenshot(path=str(artifacts / "e2e-stop-3-finished.png"), full_page=True)
        assert "Traceback" not in server.log.read_text()
        print(
            f"stopped {stopped_in:.0f} s after the press with {kept} of {total} plans kept; "
            f"the second pass took {time.monotonic() - started:.0f} s"
        )
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-stop-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        if store is not None:
            store.close()
        page.close()
        server.stop()
