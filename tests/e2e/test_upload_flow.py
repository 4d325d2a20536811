"""Bring your own model, in Chromium against a real `streamlit run` with Dask workers.

Upload a model and a labelled .npz through the file inputs, add it, evaluate the INT8 preset on the
Plan page; upload random bytes as a model and read what is wrong (no traceback, the app stays up);
upload a model with an open sequence length and no data, give the length, and see it added as
measured on random inputs.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from engine.store import ResultStore
from tests.dashboard.test_upload_page import _labelled
from tests.e2e.conftest import start_server
from tests.e2e.test_dashboard_flow import choose, click, wait_idle
from tests.legacy_models import dynamic_width_model

pytestmark = pytest.mark.e2e
SYNTHETIC = "Accuracy unknown: no data given"


def open_add_section(page: Any) -> None:
    page.get_by_role("heading", name="Models", exact=True).wait_for(timeout=120_000)
    uploaders = page.locator("[data-testid=stFileUploader]")
    if not uploaders.first.is_visible():  # the expander starts closed on a fresh page
        page.locator("[data-testid=stExpander] summary", has_text="Add your own model").click()
    uploaders.first.wait_for(timeout=30_000)


def upload(page: Any, index: int, path: Path) -> None:
    """Put a file into the index-th file uploader (0: model, 1: data), and wait for the rerun."""
    uploader = page.locator("[data-testid=stFileUploader]").nth(index)
    uploader.locator("input[type=file]").set_input_files(str(path))
    uploader.get_by_text(path.name).wait_for(timeout=30_000)
    wait_idle(page)


def picked_model(page: Any) -> str:
    """The model shown in the sidebar picker (the selectbox's text, or its input's value)."""
    return str(
        page.locator(".st-key-qd_model [data-testid=stSelectbox]").evaluate(
            "e => { const i = e.querySelector('input'); return (i && i.value) || e.innerText.trim(); }"
        )
    )


class AppRuns:
    """What the page and the app said over the websocket: whole-app rerun requests the page sent (a
    fragment's tick is not one), and whole-app runs the app finished."""

    def __init__(self) -> None:
        self.requests = 0
        self.finished = 0

    def watch(self, ws: Any) -> None:
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, payload: object) -> None:
        if isinstance(payload, bytes):
            message = BackMsg.FromString(payload)
            if message.WhichOneof("type") == "rerun_script" and not message.rerun_script.fragment_id:
                self.requests += 1

    def _received(self, payload: object) -> None:
        if isinstance(payload, bytes):
            message = ForwardMsg.FromString(payload)
            if (
                message.WhichOneof("type") == "script_finished"
                and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY
            ):
                self.finished += 1


def rerun_app(page: Any, runs: AppRuns) -> None:
    """Rerun the whole app as a background job ending does (Streamlit's R key), and wait for it to end.

    Streamlit ignores R while a run is going (a fragment's tick, or the rerun a job's end asked for),
    so press until the page asks for a whole-app rerun, each press once the page is idle; then wait
    until the app has finished a whole run begun after the press.
    """
    requested = runs.requests
    deadline = time.monotonic() + 60
    while runs.requests == requested:
        assert time.monotonic() < deadline, "pressing R sent no rerun request in 60 s"
        wait_idle(page)
        finished = runs.finished
        # R typed in an input is text, not a rerun.
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press("r")
        page.wait_for_timeout(1000)
    while runs.finished == finished:
        assert time.monotonic() < deadline, "the rerun R asked for did not finish in 60 s"
        page.wait_for_timeout(100)
    wait_idle(page)


def no_traceback(page: Any) -> None:
    assert page.locator("[data-testid=stException]").count() == 0, page.inner_text("body")[-2000:]


def test_upload_evaluate_refuse_and_ask_for_sizes(browser: Any, tmp_path: Path, artifacts: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    # Labelled by the FP32 model itself (100% FP32 accuracy), under names a user would give them.
    model, data = _labelled(files, seed=3, every_class=False)
    model, data = model.rename(files / "My Tiny CNN.onnx"), data.rename(files / "digits_eval.npz")
    bad = files / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    seq = files / "seq.onnx"
    seq.write_bytes(dynamic_width_model().SerializeToString())

    server = start_server(home, {"QUANTDASH_QUICK": "1"})
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    runs = AppRuns()
    page.on("websocket", runs.watch)
    try:
        page.goto(server.url)
        page.locator(".st-key-qd_model [data-testid=stSelectbox]").wait_for(timeout=120_000)

        # 1. A model and labelled data: added, picked in the sidebar, carded.
        open_add_section(page)
        upload(page, 0, model)
        upload(page, 1, data)
        name = page.get_by_label("Name", exact=True).and_(page.locator("input"))
        name.wait_for()
        assert name.input_value() == "my-tiny-cnn"  # suggested from the file name
        page.screenshot(path=str(artifacts / "e2e-upload-1-chosen.png"), full_page=True)
        started = time.monotonic()
        click(page, "qd_upload_add")
        page.get_by_text(re.compile(r"^Added my-tiny-cnn \(classification")).wait_for(timeout=120_000)
        page.get_by_role("heading", name="my-tiny-cnn", exact=True).wait_for(timeout=30_000)
        assert "model=my-tiny-cnn" in page.url
        assert picked_model(page) == "my-tiny-cnn"
        no_traceback(page)
        # What INT8 does to its size and speed, on the Models page within a minute of the upload.
        page.get_by_text("What INT8 does to it").wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"^\d+ INT8\. Output fidelity to FP32")).wait_for(
            timeout=max(5.0, 60 - (time.monotonic() - started)) * 1000
        )
        no_traceback(page)
        page.screenshot(path=str(artifacts / "e2e-upload-2-added.png"), full_page=True)

        # 2. The Plan page: the INT8 preset, evaluated like any model's.
        page.get_by_role("link", name="Plan").click()
        page.get_by_role("heading", name="Plan · my-tiny-cnn").wait_for(timeout=60_000)
        choose(page, "qd_preset", re.compile(r"^int8:"))
        click(page, "qd_apply_preset")
        page.get_by_text("5 INT8", exact=True).wait_for(timeout=30_000)
        click(page, "qd_evaluate")
        page.get_by_text(re.compile(r"^Measured: 5 INT8 · accuracy \d")).wait_for(timeout=120_000)
        no_traceback(page)
        store = ResultStore(home / "results.sqlite")
        frame = store.to_frame("my-tiny-cnn")
        assert "5 INT8" in set(frame["plan_summary"]) and frame["accuracy"].notna().all()
        page.screenshot(path=str(artifacts / "e2e-upload-3-plan.png"), full_page=True)

        # 3. Random bytes named bad.onnx: what is wrong and what is expected; no traceback; app up.
        page.get_by_role("link", name="Models").click()
        open_add_section(page)
        upload(page, 0, bad)
        error = page.locator("[data-testid=stAlertContentError]").first
        error.wait_for(timeout=60_000)
        text = error.inner_text()
        assert text.startswith("bad.onnx"), text
        assert re.search(r"not a readable ONNX model|holds no ONNX graph", text), text
        assert "Expected a .onnx file" in text, text
        no_traceback(page)
        # With data given, the same file is refused on Add model; the uploads stay for a retry.
        upload(page, 1, data)
        # With data given the button is enabled again: click it once the rerun that enables it is
        # drawn, not while it runs (twice, in full runs only, the click led to no check at all).
        page.locator(".st-key-qd_upload_add button:not([disabled])").wait_for(timeout=60_000)
        wait_idle(page)
        click(page, "qd_upload_add")
        refused = page.locator("[data-testid=stAlertContentError]", has_text=re.compile(r"^bad\.onnx"))
        try:  # the check runs in a worker, as adding a model does above: the same 120 s
            refused.first.wait_for(timeout=120_000)
        except Exception:  # what the page showed instead, for whoever reads the failure
            page.screenshot(path=str(artifacts / "e2e-upload-4-refused-FAILED.png"), full_page=True)
            print("page when the refusal did not come:", page.inner_text("body")[-3000:])
            raise
        text = refused.first.inner_text()
        assert re.search(r"not a readable ONNX model|holds no ONNX graph", text), text
        print("refused on Add model:", text)
        # The refusal outlives reruns (a job ending elsewhere reruns the app) while the files stay.
        rerun_app(page, runs)
        assert refused.first.is_visible()
        no_traceback(page)
        assert page.locator("[data-testid=stFileUploader]").nth(0).get_by_text("bad.onnx").is_visible()
        assert page.locator("[data-testid=stFileUploader]").nth(1).get_by_text(data.name).is_visible()
        with urllib.request.urlopen(server.url + "/_stcore/health", timeout=10) as r:
            assert r.status == 200
        page.screenshot(path=str(artifacts / "e2e-upload-4-refused.png"), full_page=True)

        # 4. No data, an open sequence length: the page asks for it, then adds on random inputs.
        page.locator("[data-testid=stFileUploader]").nth(1).locator(
            "[data-testid=stFileChipDeleteBtn] button, [data-testid=stFileChipDeleteBtn]"
        ).first.click()
        wait_idle(page)
        upload(page, 0, seq)
        size = page.get_by_label(re.compile(r"size of 'length'"))
        size.wait_for(timeout=60_000)
        click(page, "qd_upload_add")
        ask = page.get_by_text(re.compile("Give a size for each open input dimension"))
        ask.wait_for(timeout=30_000)
        rerun_app(page, runs)
        assert ask.is_visible()
        size.fill("100")
        size.press("Enter")
        wait_idle(page)
        click(page, "qd_upload_add")
        page.get_by_text(re.compile(r"^Added seq ")).wait_for(timeout=120_000)
        page.get_by_role("heading", name="seq", exact=True).wait_for(timeout=30_000)
        page.get_by_text(SYNTHETIC).first.wait_for(timeout=30_000)
        no_traceback(page)
        page.screenshot(path=str(artifacts / "e2e-upload-5-no-data.png"), full_page=True)
    except BaseException:
        page.screenshot(path=str(artifacts / "e2e-upload-failure.png"), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    finally:
        page.close()
        server.stop()
