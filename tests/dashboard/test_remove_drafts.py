"""Removing an added model on the Models page removes the plan kept on disk for it (its draft) too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboard import cached, drafts, state
from engine.api import Engine
from engine.datasets import sample_names
from engine.types import CalibrationMethod
from tests.dashboard.conftest import app
from tests.models import tiny_cnn

NAME = "drafted"


def _kept(home: Path) -> set[str]:
    folder = home / "drafts"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _plan(at: Any) -> str:
    return str({m.label: m.value for m in at.metric}["Plan"])


def _int8(at: Any) -> None:
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key="qd_preset").set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    assert not at.exception


def test_removing_a_model_removes_its_draft_and_only_its(home: Path, tmp_path: Path) -> None:
    engine = Engine(pool=None, home=home)
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(tiny_cnn()[0])
    engine.add_model(model_file, name=NAME)
    sample = sample_names()[0]
    at = app(model=sample)
    _int8(at)  # a draft of a sample model, which must stay
    at.selectbox(key=state.MODEL).set_value(NAME).run()
    _int8(at)
    int8 = _plan(at)
    drafted = _kept(home)
    assert len(drafted) == 2

    at.switch_page("app_pages/models.py").run()
    at.checkbox(key=state.remove_confirm_key(NAME)).check().run()
    at.button(key=state.REMOVE_MODEL).click().run()
    assert not at.exception and "Removed drafted" in "".join(str(t.value) for t in at.toast)
    assert len(_kept(home)) == 1 and _kept(home) < drafted  # the sample's draft stays

    # The same file added again under the name, as a new model: it starts from FP32, not the old plan.
    engine.add_model(model_file, name=NAME)
    again = app(model=NAME)  # a new session: the plan can come only from the disk
    again.switch_page("app_pages/plan.py").run()
    assert not again.exception
    assert _plan(again) != int8


def test_a_draft_removed_is_gone_and_removing_none_is_no_error(home: Path, tmp_path: Path) -> None:
    layers = cached.layers(sample_names()[0])
    assignment = {x.name: "int8" for x in layers}
    drafts.save(tmp_path, "m@1/2", assignment, CalibrationMethod.ENTROPY)
    drafts.save(tmp_path, "m@3/4", assignment)
    drafts.remove(tmp_path, "m@1/2")
    assert drafts.load(tmp_path, "m@1/2", layers) is None
    assert drafts.load(tmp_path, "m@3/4", layers) is not None  # another model's, under the same name
    drafts.remove(tmp_path, "m@1/2")  # already gone
    drafts.remove(tmp_path / "nowhere", "m@5/6")  # no drafts folder at all
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "drafts").write_text("a file where the drafts folder goes")
    drafts.remove(blocked, "m@1/2")  # nothing to remove there: the model's removal is not stopped
