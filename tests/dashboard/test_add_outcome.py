"""What adding a model said reaches a tab reloaded during the check, and other tabs: the check is a job
row (dashboard.upload_logic.add_upload). Its own module: its job rows show in every session of its home
for minutes, as they should, and would be read as other tests' messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dashboard import cached, state, upload_logic
from engine.model_io import ModelError
from tests.dashboard.conftest import app
from tests.models import tiny_cnn


def _texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


def _labelled(tmp: Path) -> tuple[bytes, bytes]:
    model_bytes, _ = tiny_cnn(seed=7)
    x = np.random.default_rng(7).random((120, 1, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    np.savez(tmp / "d.npz", input=x, labels=session.run(None, {"input": x})[0].argmax(1))
    return model_bytes, (tmp / "d.npz").read_bytes()


def test_an_adds_outcome_reaches_a_tab_reloaded_during_its_check(home: Path, tmp_path: Path) -> None:
    """Browser QA: a reload while a model was being checked lost what the check said: the model was
    added (or refused) with no word in the new page. The check is a job row now; a session other than
    the one that pressed Add (a reload is a new session) shows its outcome, the adding one does not
    twice (it says it in its own words)."""
    store = cached.runner().store
    engine = cached.runner().engine
    model_bytes, data_bytes = _labelled(tmp_path)
    upload_logic.add_upload(
        engine,
        ("Reload Net.onnx", model_bytes),
        ("d.npz", data_bytes),
        jobs=store,
        job_id="add-model-reloaded",
    )
    junk = np.random.default_rng(1).bytes(2048)
    with pytest.raises(ModelError):
        upload_logic.add_upload(engine, ("broken.onnx", junk), jobs=store, job_id="add-model-refused")
    assert store.get_job("add-model-reloaded")["state"] == "done"
    assert store.get_job("add-model-refused")["state"] == "failed"

    reloaded = app()
    reloaded.run()
    assert not reloaded.exception
    assert "Added **reload-net** (classification;" in _texts(reloaded.success)
    assert "broken.onnx was not added: broken.onnx" in _texts(reloaded.error)

    adding = app()
    adding.session_state[state.DISMISSED] = {"add-model-reloaded", "add-model-refused"}
    adding.run()
    assert "reload-net" not in _texts(adding.success) and "broken.onnx" not in _texts(adding.error)
    reloaded.button(key="qd_dismiss_add-model-reloaded").click().run()
    assert "reload-net" not in _texts(reloaded.success)


def test_the_adding_tab_says_each_outcome_once(home: Path, tmp_path: Path) -> None:
    """The page keeps what the add said and says it itself; the job row's copy is for other tabs."""
    at = app()
    at.run()
    at.file_uploader[0].set_value(("Once Net.onnx", tiny_cnn(seed=9)[0], "application/octet-stream")).run()
    at.button(key=state.UPLOAD_ADD).click().run()
    assert not at.exception
    assert _texts(at.success).count("Added **once-net**") == 1
    # With data: a model file without any is read (and refused) before Add can be pressed.
    _, data = _labelled(tmp_path)
    at.file_uploader[0].set_value(("junk.onnx", b"\x00" * 512, "application/octet-stream"))
    at.file_uploader[1].set_value(("d.npz", data, "application/octet-stream")).run()
    at.button(key=state.UPLOAD_ADD).click().run()
    assert not at.exception
    assert _texts(at.error).count("junk.onnx") == 1, _texts(at.error)  # not again in the jobs panel
