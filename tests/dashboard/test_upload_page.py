"""Models you add, in the dashboard: listed beside the samples, carded with what their data can tell,
removable, and every page renders for them. Real engine, inline, in a temporary home.

Most models are added through the engine here (the page's own upload path, dashboard.upload_logic, is
tested directly below; tests/e2e/test_upload_flow.py uploads through a real browser). What the form
says about the sizes typed for an upload is driven through AppTest's file_uploader.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import cached, state, text, upload_logic
from engine.api import Engine
from engine.datasets import sample_names
from engine.model_io import ModelError
from engine.user_models import models_dir, user_model_names
from tests.dashboard.conftest import app, wait_for_jobs
from tests.legacy_models import dynamic_width_model, with_conv_transpose
from tests.models import tiny_cnn

PAGES = ["plan", "explore", "compare", "search", "report"]


def _texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


def _engine(home: Path) -> Engine:
    return Engine(pool=None, home=home)


def _save(model: onnx.ModelProto | bytes, path: Path) -> Path:
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _labelled(tmp: Path, seed: int = 3, every_class: bool = True) -> tuple[Path, Path]:
    """tiny_cnn and 120 labelled samples: every class in turn, or the FP32 model's own predictions
    (which leave some of the 10 classes without a sample)."""
    model_bytes, _ = tiny_cnn(seed=seed)
    x = np.random.default_rng(seed).random((120, 1, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    labels = np.arange(120) % 10 if every_class else session.run(None, {"input": x})[0].argmax(1)
    data = tmp / f"data-{seed}-{every_class}.npz"
    np.savez(data, input=x, labels=labels)
    return _save(model_bytes, tmp / "tiny.onnx"), data


@pytest.fixture(scope="module")
def added(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three added models: no data (synthetic), data without labels, labelled data."""
    tmp = tmp_path_factory.mktemp("uploads")
    engine = _engine(home)
    synthetic = engine.add_model(_save(with_conv_transpose(), tmp / "Up Sampler.onnx"))
    model_path, data_path = _labelled(tmp)
    np.savez(tmp / "unlabelled.npz", input=np.load(data_path)["input"])
    unlabelled = engine.add_model(model_path, tmp / "unlabelled.npz", name="tiny-unlabelled")
    labelled = engine.add_model(model_path, data_path, name="tiny-labelled")
    return {"synthetic": synthetic.name, "unlabelled": unlabelled.name, "labelled": labelled.name}


def test_added_models_are_listed_after_the_samples(added: dict[str, str]) -> None:
    at = app()
    at.run()
    assert not at.exception
    options = at.selectbox(key=state.MODEL).options
    assert options == [*sample_names(), "tiny-labelled", "tiny-unlabelled", "up-sampler"]
    table = at.dataframe[0].value
    kinds = dict(zip(table["model"], table["kind"], strict=True))
    assert kinds["up-sampler"] == "added" and kinds[sample_names()[0]] == "sample"
    assert added["synthetic"] == "up-sampler"


def test_synthetic_model_card_banner_notes_fp32_only_ops_and_int8(added: dict[str, str]) -> None:
    at = app(model=added["synthetic"])
    at.run()
    assert not at.exception
    assert at.subheader[0].value == "up-sampler"
    assert upload_logic.SYNTHETIC_BANNER in _texts(at.warning)
    assert "accuracy unknown: no data given" in _texts(at.markdown).lower()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Task"] == "fidelity only" and metrics["Evaluation samples"] == "64 (random)"
    fp32_only = at.dataframe[1].value
    assert list(fp32_only["op"]) == ["ConvTranspose"] and "transposed convolution" in fp32_only.iloc[0, 2]
    assert list(at.dataframe[2].value["layer"]) == ["conv", "fc"]
    # The FP32 baseline, then the INT8 preset: what quantization does, without leaving the page.
    wait_for_jobs(at)
    wait_for_jobs(at)
    assert not at.exception
    assert "What INT8 does to it (preset int8, measured here)" in _texts(at.markdown)
    labels = [m.label for m in at.metric]
    assert labels.count("Size") == 2 and "Top-1 agreement with FP32" in labels
    assert "Output fidelity to FP32: SQNR" in _texts(at.caption)


def test_unlabelled_and_labelled_cards(added: dict[str, str]) -> None:
    at = app(model=added["unlabelled"])
    at.run()
    assert not at.exception
    said = upload_logic.NO_LABELS_BANNER.format(fidelity="top-1 agreement, SQNR, KL divergence")
    assert said in _texts(at.info)
    assert not at.warning
    at = app(model=added["labelled"])
    at.run()
    assert not at.exception
    assert "No labels" not in _texts(at.info) and upload_logic.SYNTHETIC_BANNER not in _texts(at.warning)
    assert {m.label: m.value for m in at.metric}["Task"] == "classification"
    assert len(at.dataframe) == 2  # models and layers: no op stays FP32 in tiny_cnn


@pytest.mark.parametrize("kind", ["synthetic", "unlabelled", "labelled"])
def test_every_page_renders_for_an_added_model(added: dict[str, str], kind: str) -> None:
    at = app(model=added[kind])
    at.run()
    wait_for_jobs(at)  # the Models page measures the FP32 baseline (and the INT8 preset)
    wait_for_jobs(at)
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert added[kind] in at.header[0].value
    if kind != "labelled":
        # The report judges plans by accuracy: a model without labels is told why there is none.
        assert "no labelled evaluation data" in _texts(at.error) + _texts(at.info)


def test_compare_with_a_class_missing_from_the_data(home: Path, tmp_path: Path) -> None:
    model_path, data_path = _labelled(tmp_path, seed=3, every_class=False)
    assert len(np.unique(np.load(data_path)["labels"])) < 10
    _engine(home).add_model(model_path, data_path, name="tiny-few-classes")
    at = app(model="tiny-few-classes")
    at.run()
    wait_for_jobs(at)
    wait_for_jobs(at)  # the FP32 baseline, then the INT8 preset: two results to compare
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception


def test_plan_page_evaluates_an_added_model(added: dict[str, str]) -> None:
    model = added["synthetic"]
    at = app(model=model)
    at.switch_page("app_pages/plan.py").run()
    at.selectbox(key=state.PRESET).set_value("int8").run()
    at.button(key="qd_apply_preset").click().run()
    assert {m.label: m.value for m in at.metric}["Plan"] == "2 INT8"  # the ConvTranspose is no layer
    at.button(key="qd_evaluate").click().run()
    wait_for_jobs(at)
    assert not at.exception
    assert "Measured: 2 INT8 · " in _texts(at.info)


def test_an_edit_a_layer_cannot_take_is_reverted_with_its_reason(added: dict[str, str]) -> None:
    at = app(model=added["labelled"])
    at.run()
    layer_table = at.dataframe[1].value
    head = layer_table["cannot take"].iloc[3]
    assert "INT4" in head and "only 16" in head  # tiny_cnn's head reads 16 features: no INT4 block
    at.switch_page("app_pages/plan.py").run()
    editor_key = at.data_editor[0].key
    at.session_state[editor_key] = {
        "edited_rows": {"3": {"precision": "INT4"}, "0": {"precision": "INT4"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception
    assert any("cannot be INT4" in w.value and "only 16" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Plan"] == "4 FP32 · 1 INT4"  # the Conv's edit is kept
    at.run()  # the reason outlives any rerun (a job ending elsewhere reruns the app) while the plan stays
    assert any("cannot be INT4" in w.value for w in at.warning)
    at.button(key="qd_apply_preset").click().run()  # another edit: its own notes (none) replace it
    assert not any("cannot be INT4" in w.value for w in at.warning)


def test_remove_then_a_new_model_takes_the_name(home: Path, tmp_path: Path) -> None:
    engine = _engine(home)
    engine.add_model(_save(tiny_cnn()[0], tmp_path / "a.onnx"), name="reused")
    at = app(model="reused")
    at.run()
    assert list(at.dataframe[1].value["layer"])[0] == "/stem/Conv"
    assert at.button(key=state.REMOVE_MODEL).disabled  # until confirmed
    # What buttons said about it: a new model under its name must not be shown these.
    said = {
        state.PLAN_OUTCOME: (("reused", None, None), "error", "stopped"),
        state.SEARCH_BUSY: (("reused", True), "warning", "wait"),
    }
    for key, kept in said.items():
        at.session_state[key] = kept
    at.checkbox(key=state.remove_confirm_key("reused")).check().run()
    at.button(key=state.REMOVE_MODEL).click().run()
    assert not at.exception
    assert not [key for key in said if key in at.session_state], "what buttons said outlived the removal"
    assert "reused" not in user_model_names(home) and not (models_dir(home) / "reused").exists()
    assert "reused" not in at.selectbox(key=state.MODEL).options
    assert state.MODEL in at.session_state and at.session_state[state.MODEL] == sample_names()[0]
    assert "Removed reused" in _texts(at.toast)
    assert "was removed (in another tab" not in _texts(at.warning)  # removed here: the toast said so

    # Another model under the freed name: the page shows it, not what was cached for the old one.
    engine.add_model(_save(with_conv_transpose(), tmp_path / "b.onnx"), name="reused")
    at.run()  # lists it again
    at.selectbox(key=state.MODEL).set_value("reused").run()
    assert not at.exception
    assert list(at.dataframe[2].value["layer"]) == ["conv", "fc"]
    assert cached.runner().model("reused").card["fp32_only"][0]["op"] == "ConvTranspose"


def test_remove_is_offered_for_added_models_only(added: dict[str, str]) -> None:
    at = app(model=sample_names()[0])
    at.run()
    assert not at.exception
    assert not [b for b in at.button if b.key == state.REMOVE_MODEL]
    assert "Add your own model" in [e.label for e in at.expander]


# --- the page's upload path, without a browser --------------------------------------------------


def test_stored_names_keep_only_the_suffix() -> None:
    assert upload_logic.stored_name("upload", "My Net.ONNX") == "upload.onnx"
    assert upload_logic.stored_name("data", "../../etc/x.npz") == "data.npz"
    assert upload_logic.stored_name("upload", "no-suffix") == "upload"
    assert upload_logic.stored_name("upload", "x.on nx") == "upload"
    assert upload_logic.label("photos/2024/model.onnx") == "model.onnx"


def test_dynamic_dimensions_become_shapes() -> None:
    declared = [
        {"name": "x", "shape": ["batch", 2, "length"], "dtype": "float32"},
        {"name": "mask", "shape": ["batch", 2], "dtype": "float32"},
        {"name": "img", "shape": [4, "h", "w"], "dtype": "float32"},
    ]
    dims = upload_logic.dynamic_dims(declared)
    assert [(d.input, d.axis, d.name) for d in dims] == [("x", 2, "length"), ("img", 1, "h"), ("img", 2, "w")]
    shapes, missing = upload_logic.shapes_for(declared, {(0, 2): 100, (2, 1): 5, (2, 2): None})
    assert [d.name for d in missing] == ["w"]
    # Only inputs with open dimensions are given; a fixed batch size stays as declared.
    assert shapes == {"x": (1, 2, 100), "img": (4, 5, 0)}
    shapes, missing = upload_logic.shapes_for(declared, {(0, 2): 100, (2, 1): 5, (2, 2): 7})
    assert not missing and shapes["img"] == (4, 5, 7)
    # A size typed is a size given, even 0 or -3: what is wrong with it is said, not "give a size".
    shapes, missing = upload_logic.shapes_for(declared, {(0, 2): 0, (2, 1): -3, (2, 2): 7})
    assert not missing and shapes == {"x": (1, 2, 0), "img": (4, -3, 7)}
    assert upload_logic.size_refusal("m.onnx", declared, shapes) == (
        "m.onnx: input 'x' dimension 2 ('length'): 0 is not a size; expected a whole number of at least 1"
    )


def test_add_upload_names_the_users_files_and_leaves_nothing_behind(home: Path, tmp_path: Path) -> None:
    engine = _engine(home)
    model_path, data_path = _labelled(tmp_path, seed=5)
    uploads_before = set(Path(tempfile.gettempdir()).glob("quantdash-upload-*"))
    new = upload_logic.add_upload(
        engine, ("My CNN.onnx", model_path.read_bytes()), ("evaluation set.npz", data_path.read_bytes())
    )
    assert new.name == "my-cnn" and new.card["task"] == "classification"
    assert sorted(p.name for p in new.folder.iterdir()) == [
        "calib.npz",
        "card.json",
        "eval.npz",
        "model.onnx",
    ]
    assert set(Path(tempfile.gettempdir()).glob("quantdash-upload-*")) == uploads_before
    assert not [p for p in models_dir(home).iterdir() if p.name.startswith(".")]
    assert new.card["source"] == {"model_file": "My CNN.onnx", "data_file": "evaluation set.npz"}
    message = upload_logic.added_text(new)
    assert message.startswith("Added **my-cnn** (classification; ")

    path = _save(dynamic_width_model(), tmp_path / "seq.onnx")
    declared = upload_logic.read_declared(engine, "seq.onnx", path.read_bytes())
    assert declared == [{"name": "x", "shape": ["batch", 2, "length"], "dtype": "float32"}]
    shapes, _ = upload_logic.shapes_for(declared, {(0, 2): 50})
    seq = upload_logic.add_upload(engine, ("seq.onnx", path.read_bytes()), shapes=shapes)
    assert seq.card["synthetic"] and engine.model(seq.name).eval_set.inputs["x"].shape[1:] == (2, 50)


def test_bad_uploads_are_refused_with_the_users_file_name(home: Path) -> None:
    engine = _engine(home)
    junk = np.random.default_rng(0).bytes(4096)
    with pytest.raises(ModelError) as info:
        upload_logic.read_declared(engine, "bad.onnx", junk)
    assert str(info.value).startswith("bad.onnx")
    with pytest.raises(ModelError) as info:
        upload_logic.add_upload(engine, ("bad.onnx", junk))
    assert "bad.onnx" in str(info.value) and "expected" in str(info.value).lower()
    with pytest.raises(ModelError) as info:
        upload_logic.add_upload(engine, ("weights.pt", junk))
    assert "weights.pt" in str(info.value)
    assert not [p for p in models_dir(home).iterdir() if p.name.startswith(".")]


def test_markdown_in_names_and_messages_stays_plain() -> None:
    assert text.md("my_model_v2*.onnx: [x](y) $5") == r"my\_model\_v2\*.onnx: \[x\](y) \$5"


def test_a_model_replaced_elsewhere_while_the_app_runs_is_reloaded(home: Path, tmp_path: Path) -> None:
    engine = _engine(home)  # another process, as the CLI is
    engine.add_model(_save(tiny_cnn()[0], tmp_path / "a.onnx"), name="swapped")
    at = app(model="swapped")
    at.run()
    assert list(at.dataframe[1].value["layer"])[0] == "/stem/Conv"
    # As quantdash remove-model swapped, then quantdash add-model b.onnx --name swapped, would:
    engine.remove_model("swapped")
    engine.add_model(_save(with_conv_transpose(), tmp_path / "b.onnx"), name="swapped")
    at.run()
    assert not at.exception
    assert list(at.dataframe[2].value["layer"]) == ["conv", "fc"]
    assert cached.runner().model("swapped").card["fp32_only"][0]["op"] == "ConvTranspose"


# --- the Add your own model form, driven with an upload -------------------------------------------

SEQ_LABEL = "size of 'length'"


def _form_with_seq_upload() -> AppTest:
    """The Models page with lengths.onnx (one open dimension, 'length') chosen and no data."""
    at = app()
    at.run()
    at.file_uploader[0].set_value(
        ("lengths.onnx", dynamic_width_model().SerializeToString(), "application/octet-stream")
    ).run()
    assert not at.exception
    return at


def _add_with_length(at: AppTest, size: int | str) -> str:
    """Type `size` for the open dimension, press Add model; what the page says in red."""
    [length] = [n for n in at.text_input if SEQ_LABEL in n.label]
    length.input(str(size)).run()
    at.button(key=state.UPLOAD_ADD).click().run()
    assert not at.exception
    return _texts(at.error)


@pytest.mark.parametrize("size", [0, -3])
def test_a_size_below_one_is_named_not_asked_for_again(home: Path, size: int) -> None:
    at = _form_with_seq_upload()
    said = _add_with_length(at, size)
    assert (
        f"input 'x' dimension 2 ('length'): {size} is not a size; expected a whole number of at least 1"
        in said
    )
    assert "Give a size" not in said
    assert "lengths" not in user_model_names(home)


@pytest.mark.parametrize(("typed", "said"), [("2.5", "'2.5' is not a size"), ("abc", "'abc' is not a size")])
def test_a_size_that_is_no_whole_number_is_named_not_rounded(home: Path, typed: str, said: str) -> None:
    at = _form_with_seq_upload()
    refusal = _add_with_length(at, typed)
    assert said in refusal and "expected a whole number of at least 1" in refusal
    assert "lengths" not in user_model_names(home)


def test_a_size_too_large_to_draw_is_refused_with_the_size_and_the_limit(home: Path) -> None:
    at = _form_with_seq_upload()
    said = _add_with_length(at, "1e8")  # as typed in the QA pass: read as 100,000,000, not as 1
    assert said.startswith(  # as markdown: the brackets escaped
        text.md("lengths.onnx: input 'x' [batch, 2, length] with dimension 2 ('length') set to 100,000,000")
    )
    assert "over the 1 GiB limit for random inputs" in said and "at most 699,050 here" in said
    assert "MemoryError" not in said and "could not be checked" not in said
    assert "lengths" not in user_model_names(home)
    # A size the model really takes is added as before.
    assert _add_with_length(at, 50) == ""
    assert "lengths" in user_model_names(home) and at.subheader[0].value == "lengths"


def test_the_uploaders_state_the_real_size_limit(home: Path) -> None:
    """Streamlit's own box reads "1GB per file" for the 512 MB cap; the captions under it say 512 MB."""
    config = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"
    cap = tomllib.loads(config.read_text())["server"]["maxUploadSize"]
    at = app()
    at.run()
    captions = _texts(at.caption)
    assert f"Up to {cap} MB per file" in captions  # the model: .onnx or .zip
    assert f"256 MB for .npz, {cap} MB for .zip, 64 MB for .csv" in captions
    assert f"the app's {cap} MB cap rounded to 1GB" in captions


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("32", 32),
        (" 1,024 ", 1024),
        ("1e9", 1_000_000_000),
        ("-3", -3),  # named by the engine's size check, not here
        ("", None),
        ("2.5", "2.5"),
        ("1,5", "1,5"),  # a decimal comma: named, not read as 15
        ("1e300", "1e300"),  # no 301-digit size echoed back
        ("abc", "abc"),
    ],
)
def test_a_size_is_read_as_typed_or_kept_as_text_to_name(typed: str, read: int | str | None) -> None:
    assert upload_logic.read_size(typed) == read


def test_a_press_in_a_tab_whose_model_was_removed_elsewhere_does_nothing_and_says_so(
    home: Path, tmp_path: Path
) -> None:
    """Browser QA: a tab on a model removed in another tab pressed Run sensitivity pass and started a
    100-probe pass on the first model listed, which the user never picked, without a word."""
    engine = _engine(home)
    engine.add_model(_save(tiny_cnn()[0], tmp_path / "a.onnx"), name="gone-elsewhere")
    runner = cached.runner()
    passes = len([j for j in runner.store.list_jobs() if j["kind"] == "sensitivity"])
    at = app(model="gone-elsewhere")
    at.switch_page("app_pages/search.py").run()
    assert not at.exception
    engine.remove_model("gone-elsewhere")  # another tab's Remove (or the CLI)
    cached.models_changed("gone-elsewhere")
    at.button(key=state.SENS_RUN).click().run()
    assert not at.exception
    said = _texts(at.warning)
    assert "gone-elsewhere was removed (in another tab" in said and "Nothing you pressed was done" in said
    assert len([j for j in runner.store.list_jobs() if j["kind"] == "sensitivity"]) == passes
    at.run()  # the next run is the shown model's page, as usual
    assert "was removed" not in _texts(at.warning)


def test_the_models_table_gives_an_added_models_measured_fp32_accuracy(added: dict[str, str]) -> None:
    """Browser QA: 'FP32 accuracy (card)' read None for every added model, measured or not."""
    at = app(model=added["labelled"])
    at.run()
    wait_for_jobs(at)  # opening it measures its FP32 baseline
    at.run()
    table = at.dataframe[0].value.set_index("model")
    measured = cached.runner().store.get_ok(cached.baseline_key(added["labelled"]))
    assert measured is not None
    assert table.loc[added["labelled"], "FP32 accuracy"] == pytest.approx(measured["metrics"]["accuracy"])
    assert table.loc[sample_names()[0], "FP32 accuracy"] > 0.5  # a sample: its card
