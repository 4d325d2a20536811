"""Bringing your own model: add it (checked in a worker), use it by name, or be told exactly why not.

Real files, real ONNX Runtime, a real worker pool for the checks that must not take the caller
down. Foreign and legacy graphs are built in tests/legacy_models.py to mimic other exporters.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import synthetic
from engine.api import Engine
from engine.cli import main as cli_main
from engine.jobs import WorkerPool
from engine.model_io import ModelError
from engine.search import SearchSpec, run_search
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision
from engine.user_models import models_dir, parse_shapes, user_model_names
from tests.legacy_models import dynamic_width_model, legacy_cnn, memory_bomb, run_fp32, with_conv_transpose
from tests.models import tiny_cnn

FAST = MeasureSettings(batch_sizes=(1,), max_seconds=0.2, max_runs=30, bootstrap=200)


def _engine(home: Path, pool: WorkerPool | None = None) -> Engine:
    return Engine(store=ResultStore(home / "results.sqlite"), pool=pool, home=home, settings=FAST)


def _save(model: onnx.ModelProto | bytes, path: Path) -> Path:
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _labelled_npz(path: Path, x: np.ndarray, labels: np.ndarray | None, name: str = "input") -> Path:
    arrays = {name: x, **({"labels": labels} if labels is not None else {})}
    np.savez(path, **arrays)
    return path


def _refused(engine: Engine, *args: object, **kwargs: object) -> str:
    with pytest.raises(ModelError) as info:
        engine.add_model(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- models that work -------------------------------------------------------------------------


def test_added_model_with_labelled_data_is_usable_by_name(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model_bytes, inputs = tiny_cnn(seed=3)
    x = np.random.default_rng(1).random((200, 1, 8, 8), dtype=np.float32)
    # Labels the FP32 model gets right 100% of the time: INT8 must stay close to that.
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    labels = session.run(None, {"input": x})[0].argmax(1)
    added = engine.add_model(
        _save(model_bytes, tmp_path / "My Net.onnx"), _labelled_npz(tmp_path / "d.npz", x, labels)
    )
    assert added.name == "my-net" and added.name in user_model_names(engine.home)
    card = json.loads((added.folder / "card.json").read_text())
    assert card["task"] == "classification" and card["metrics"] == ["accuracy"]
    assert card["calib_size"] + card["eval_size"] == 200 and card["calib_size"] == 50
    assert card["source"] == {"model_file": "My Net.onnx", "data_file": "d.npz"}
    # Nothing but the model's own files is kept: no upload copies, no staging folders.
    assert sorted(p.name for p in added.folder.iterdir()) == [
        "calib.npz",
        "card.json",
        "eval.npz",
        "model.onnx",
    ]
    assert [p.name for p in models_dir(engine.home).iterdir()] == ["my-net"]

    bundle = engine.model("my-net")
    assert bundle.eval_set.size == 150 and not bundle.eval_set.synthetic
    assert [x.name for x in engine.layers(bundle)] == ["/stem/Conv", "/block/c1/Conv", "/block/c2/Conv",
                                                         "/head/Gemm", "/fc/Gemm"]  # fmt: skip
    result = engine.evaluate(bundle, Plan(default=Precision.INT8))
    assert result["status"] == "ok", result["error"]
    m = result["metrics"]
    assert m["fp32_accuracy"] == 1.0 and m["accuracy"] >= 0.9
    assert m["accuracy_delta_ci_low"] <= m["accuracy_delta"] <= m["accuracy_delta_ci_high"]
    assert m["sqnr_db"] > 15


def test_no_labels_gives_fidelity_only(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model_bytes, inputs = tiny_cnn()
    added = engine.add_model(
        _save(model_bytes, tmp_path / "m.onnx"), _labelled_npz(tmp_path / "d.npz", inputs["input"], None)
    )
    assert added.card["task"] == "fidelity_only" and not added.card["synthetic"]
    assert any("no labels: only fidelity" in n for n in added.notes)
    result = engine.evaluate(engine.model(added.name), Plan(default=Precision.INT8))
    m = result["metrics"]
    assert result["status"] == "ok" and m.get("accuracy") is None and m["labelled"] is False
    assert m["agreement"] > 0.5 and m["sqnr_db"] > 15 and m["kl_divergence"] is not None


def test_a_model_with_one_output_value_gets_no_class_agreement_nor_kl(tmp_path: Path) -> None:
    """Browser QA: a regressor's INT8 plan read 'top-1 agreement 100%' and 'KL 0': one value has
    no classes, so its argmax always agrees and its softmax is always 1, whatever the plan."""
    import torch

    from tests.models import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).eval()
    x = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    path = _save(export(net, torch.from_numpy(x[:1]), "x"), tmp_path / "reg.onnx")
    engine = _engine(tmp_path / "home")
    added = engine.add_model(path, _labelled_npz(tmp_path / "d.npz", x, None, name="x"))
    m = engine.evaluate(engine.model(added.name), Plan(default=Precision.INT8))["metrics"]
    assert m["agreement"] is None and m["kl_divergence"] is None
    assert 15 < m["sqnr_db"] < 80  # its fidelity figure: finite, so the plan did change the outputs


def test_data_converted_to_fit_the_model_is_noted_on_its_card(tmp_path: Path) -> None:
    """Browser QA: float64 data was rounded to the model's float32 without a word."""
    engine = _engine(tmp_path / "home")
    model_bytes, inputs = tiny_cnn()
    data = _labelled_npz(tmp_path / "d.npz", inputs["input"].astype(np.float64), None)
    added = engine.add_model(_save(model_bytes, tmp_path / "m.onnx"), data)
    assert "input 'input': float64 data converted to float32, the model's type" in added.notes


def test_search_refuses_a_model_without_labels_in_plain_words(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    added = engine.add_model(_save(tiny_cnn()[0], tmp_path / "m.onnx"))
    with pytest.raises(
        ValueError, match="no labelled evaluation data, so no plan's accuracy can be measured"
    ):
        run_search(engine, engine.model(added.name), SearchSpec(candidates={"/fc/Gemm": (Precision.INT8,)}))


def test_no_data_draws_inputs_to_the_declared_shapes(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model_bytes, _ = tiny_cnn()
    added = engine.add_model(_save(model_bytes, tmp_path / "m.onnx"))
    assert added.card["synthetic"] and added.card["task"] == "fidelity_only"
    assert any("accuracy unknown: no data given" in n for n in added.notes)
    bundle = engine.model(added.name)
    assert bundle.eval_set.synthetic and bundle.eval_set.inputs["input"].shape == (64, 1, 8, 8)
    result = engine.evaluate(bundle, Plan(default=Precision.INT8))
    m = result["metrics"]
    assert result["status"] == "ok" and m["synthetic_data"] is True
    assert m["size_bytes"] > 0 and m["latency"]["1"]["median_ms"] > 0


def test_dynamic_dimensions_without_data_must_be_given(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    path = _save(dynamic_width_model(), tmp_path / "seq.onnx")
    assert engine.declared_inputs(path) == [
        {"name": "x", "shape": ["batch", 2, "length"], "dtype": "float32"}
    ]
    msg = _refused(engine, path)
    assert "input 'x' has dynamic dimensions [batch, 2, length]" in msg and "--shape x=1x2xN" in msg
    msg = _refused(engine, path, shapes={"x": (1, 3, 100)})
    assert "does not fit the declared shape [batch, 2, length]" in msg
    msg = _refused(engine, path, shapes={"tokens": (1, 2, 100)})
    assert "'tokens', which the model does not have" in msg
    added = engine.add_model(path, shapes=parse_shapes(["x=1x2x100"]))
    assert engine.model(added.name).eval_set.inputs["x"].shape == (64, 2, 100)
    assert list(models_dir(engine.home).iterdir()) == [added.folder]


def test_a_size_too_large_to_draw_is_refused_by_name_before_anything_is_allocated(tmp_path: Path) -> None:
    """100,000,000 for a sequence length: once a MemoryError blamed on the model (95.4 GiB of float64)."""
    engine = _engine(tmp_path / "home")
    path = _save(dynamic_width_model(), tmp_path / "seq.onnx")
    msg = _refused(engine, path, shapes=parse_shapes(["x=1x2x100000000"]))
    assert msg.startswith(
        "seq.onnx: input 'x' [batch, 2, length] with dimension 2 ('length') set to 100,000,000 makes each "
        "random sample 200,000,000 float32 values: 143.1 GiB for the 96 samples drawn"
    ), msg
    assert "over the 1 GiB limit for random inputs" in msg and "at most 699,050 here" in msg
    assert "MemoryError" not in msg and "could not be checked" not in msg
    assert not list(models_dir(engine.home).iterdir())


def test_the_synthetic_limit_is_exact_and_counts_every_input() -> None:
    check_synthetic_sizes = synthetic.check_synthetic_sizes
    rows = synthetic.SYNTHETIC_EVAL_ROWS + synthetic.SYNTHETIC_CALIB_ROWS
    seq = {"name": "x", "shape": ["batch", 2, "length"], "dtype": "float32"}
    most = synthetic.MAX_SYNTHETIC_BYTES // (rows * 2 * 8)  # drawn at 64 bits a value
    check_synthetic_sizes([seq], {"x": (1, 2, most)})  # exactly at the limit: drawn
    with pytest.raises(ModelError, match=f"set to {most + 1:,} .* at most {most:,} here"):
        check_synthetic_sizes([seq], {"x": (1, 2, most + 1)})
    # A second input takes its share of the same budget; a real model's sizes are far inside it.
    mask = {"name": "mask", "shape": ["batch", "length"], "dtype": "int64"}
    with pytest.raises(ModelError, match=r"\(all inputs together\)"):
        check_synthetic_sizes([seq, mask], {"x": (1, 2, most), "mask": (1, most)})
    image = {"name": "image", "shape": ["batch", 3, "h", "w"], "dtype": "float32"}
    check_synthetic_sizes([image], {"image": (1, 3, 640, 640)})
    # Counted as drawn (64 bits a value), not in the input's own type: a uint8 image of 933 MB would
    # take 7.3 GiB to draw, past a worker's 4 GiB, and crash it instead of being refused.
    pixels = {**image, "dtype": "uint8"}
    with pytest.raises(ModelError, match=r"drawn at 64 bits a value"):
        check_synthetic_sizes([pixels], {"image": (1, 3, 1800, 1800)})
    # Declared sizes count too, with nothing typed to blame: data is the way.
    with pytest.raises(
        ModelError, match=r"^input 'x' \[batch, 3, 4096, 4096\] makes .* Give evaluation data"
    ):
        check_synthetic_sizes([{"name": "x", "shape": ["batch", 3, 4096, 4096], "dtype": "float32"}], {})


@pytest.mark.parametrize("size", [0, -3])
def test_a_size_below_one_is_named_as_no_size(tmp_path: Path, size: int) -> None:
    engine = _engine(tmp_path / "home")
    path = _save(dynamic_width_model(), tmp_path / "seq.onnx")
    msg = _refused(engine, path, shapes={"x": (1, 2, size)})
    assert msg == (
        f"seq.onnx: input 'x' dimension 2 ('length'): {size} is not a size; "
        "expected a whole number of at least 1"
    )
    assert not list(models_dir(engine.home).iterdir())


def test_the_command_line_gets_the_same_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUANTDASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QUANTDASH_STORE", raising=False)
    path = str(_save(dynamic_width_model(), tmp_path / "seq.onnx"))
    for shape, said in [
        ("x=1x2x100000000", "dimension 2 ('length') set to 100,000,000 makes each random sample"),
        (
            "x=1x2x0",
            "input 'x' dimension 2 ('length'): 0 is not a size; expected a whole number of at least 1",
        ),
    ]:
        assert cli_main(["add-model", path, "--shape", shape, "--inline"]) == 2
        said_last = capsys.readouterr().err.splitlines()[-1]  # after the progress line
        assert said_last.startswith("quantdash add-model: seq.onnx: input 'x' ") and said in said_last


@pytest.mark.parametrize("opset", [7, 9, 11, 12])
def test_legacy_graph_works_end_to_end(tmp_path: Path, opset: int) -> None:
    """Old opset and IR version, weights listed as graph inputs, a weight made by a constant subgraph."""
    engine = _engine(tmp_path / "home")
    model = legacy_cnn(opset)
    x = np.random.default_rng(opset).random((120, 1, 8, 8), dtype=np.float32)
    labels = run_fp32(model, x).argmax(1)
    added = engine.add_model(
        _save(model, tmp_path / f"zoo_opset{opset}.onnx"), _labelled_npz(tmp_path / "d.npz", x, labels, "x")
    )
    assert any("also listed as graph inputs" in n for n in added.notes)
    assert any(f"opset upgraded from {opset} to 21" in n for n in added.notes)
    bundle = engine.model(added.name)
    layers = {x.name: x for x in engine.layers(bundle)}
    # conv2's weight is computed by Constant -> Transpose -> Mul: folded into a weight, it is a layer.
    assert list(layers) == ["conv1", "conv2", "fc"]
    assert layers["conv2"].params == 8 * 8 * 9
    result = engine.evaluate(bundle, Plan(default=Precision.INT8, layers={"fc": Precision.INT4}))
    assert result["status"] == "ok", result["error"]
    assert result["metrics"]["realized"] == {"conv1": "int8", "conv2": "int8", "fc": "int4"}
    assert result["metrics"]["sqnr_db"] > 15 and result["metrics"]["accuracy"] >= 0.85


def test_a_batch_fixed_at_one_is_opened_or_refused_with_the_reason(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model = legacy_cnn(11, batch=1)  # an old zoo graph: input [1, 1, 8, 8], output [1, 10]
    added = engine.add_model(_save(model, tmp_path / "fixed.onnx"))
    assert any("batch dimension of 'x' was fixed at 1; made dynamic" in n for n in added.notes)
    assert engine.model(added.name).eval_set.inputs["x"].shape == (64, 1, 8, 8)
    result = engine.evaluate(engine.model(added.name), Plan(default=Precision.INT8))
    assert result["status"] == "ok", result["error"]

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    hard = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "one_by_four"], ["flat"], name="reshape"),
            helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"),
        ],
        "hard_coded_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w, numpy_helper.from_array(np.array([1, 4], np.int64), "one_by_four")],
    )
    model = helper.make_model(hard, opset_imports=[helper.make_opsetid("", 17)])
    msg = _refused(engine, _save(model, tmp_path / "hard.onnx"))
    assert "declares a batch of 1 and fails on 2 samples at once" in msg and "dynamic batch axis" in msg


def test_op_no_precision_can_take_stays_fp32_with_the_reason(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    added = engine.add_model(_save(with_conv_transpose(), tmp_path / "up.onnx"))
    assert added.card["fp32_only"] == [
        {
            "node": "upsample",
            "op": "ConvTranspose",
            "why": "transposed convolution: quantdash quantizes Conv, MatMul and Gemm layers",
        }
    ]
    assert [x.name for x in engine.layers(engine.model(added.name))] == ["conv", "fc"]


def _with_external_data(src: Path) -> Path:
    """tiny_cnn saved as src/net.onnx with its weights in src/net.weights; returns src."""
    src.mkdir()
    onnx.save_model(
        onnx.load_from_string(tiny_cnn()[0]),
        str(src / "net.onnx"),
        save_as_external_data=True,
        location="net.weights",
        size_threshold=0,
    )
    return src


def test_zip_with_external_data_is_embedded(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    src = _with_external_data(tmp_path / "src")
    with zipfile.ZipFile(tmp_path / "net.zip", "w") as z:
        z.write(src / "net.onnx", "net/net.onnx")
        z.write(src / "net.weights", "net/net.weights")
    added = engine.add_model(tmp_path / "net.zip")
    assert any("external weight data was read and embedded" in n for n in added.notes)
    assert len(engine.layers(engine.model(added.name))) == 5


# --- refusals: each names what is wrong and what is expected; nothing is left behind -------------


def _assert_nothing_left(engine: Engine) -> None:
    folder = models_dir(engine.home)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_bad_model_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    good = tiny_cnn()[0]
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "empty.onnx is empty (0 bytes)" in _refused(engine, tmp_path / "empty.onnx")
    msg = _refused(engine, _save(good[: len(good) // 2], tmp_path / "truncated.onnx"))
    assert msg.startswith("truncated.onnx") and (
        "truncated or not ONNX" in msg or "holds no ONNX graph" in msg
    )
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    msg = _refused(engine, _save(noise, tmp_path / "noise.onnx"))
    assert msg.startswith("noise.onnx") and (
        "not a readable ONNX model" in msg or "holds no ONNX graph" in msg
    )
    assert "model.onnx" not in msg  # the stored name is never shown: the user's own is
    msg = _refused(engine, _save(good, tmp_path / "model.txt"))
    assert msg.startswith("model.txt: found '.txt'; expected an ONNX model") and "one of .onnx, .zip" in msg
    msg = _refused(engine, _save(b"\x80\x04K\x01.", tmp_path / "model.pt"))
    assert "safetensors" in msg
    _assert_nothing_left(engine)


def _one_op_model(
    op: str, domain: str = "", opset: int = 17, dims: list[int | str] | None = None
) -> onnx.ModelProto:
    dims = dims or ["N", 4]
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain, name="op")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports)


def test_graphs_this_runtime_cannot_run_are_refused_by_name(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    msg = _refused(engine, _save(_one_op_model("Relu", opset=40), tmp_path / "future.onnx"))
    assert "opset 40, newer than ONNX Runtime" in msg and "up to opset 28" in msg
    msg = _refused(engine, _save(_one_op_model("FancyOp", domain="com.acme"), tmp_path / "custom.onnx"))
    assert "custom domain" in msg and "com.acme:FancyOp" in msg
    msg = _refused(engine, _save(_one_op_model("FancyOp"), tmp_path / "unknown.onnx"))
    assert "FancyOp" in msg and "cannot load the model" in msg
    msg = _refused(engine, _save(_one_op_model("Relu", dims=["N", 100000, 100000]), tmp_path / "huge.onnx"))
    assert "declares shape [N, 100000, 100000]" in msg and "values per sample" in msg
    lying = legacy_cnn(17, inits_as_inputs=False)
    lying.graph.initializer[0].dims[0] = 8000  # declares 1000x the data it holds
    msg = _refused(engine, _save(lying, tmp_path / "lying.onnx"))
    assert "weight 'conv1.weight' declares shape [8000, 1, 3, 3]" in msg and "holds 288 bytes" in msg
    _assert_nothing_left(engine)


def test_unsafe_external_data_and_zips_are_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    src = _with_external_data(tmp_path / "src")
    escaped = onnx.load(str(src / "net.onnx"), load_external_data=False)
    for t in escaped.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    msg = _refused(engine, _save(escaped, src / "escape.onnx"))
    assert "../../etc/passwd" in msg
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as z:
        z.writestr("model.onnx", tiny_cnn()[0])
        z.writestr("../../evil.txt", "x")
    assert "../../evil.txt" in _refused(engine, tmp_path / "slip.zip")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.onnx", b"\0" * (50 * 2**20))
    assert "bomb" in _refused(engine, tmp_path / "bomb.zip").lower()
    # A damaged archive is named as the user knows it, not by the copy the engine unpacked.
    whole = (tmp_path / "slip.zip").read_bytes()
    (tmp_path / "half.zip").write_bytes(whole[: len(whole) // 2])
    msg = _refused(engine, tmp_path / "half.zip", model_label="my model.zip")
    assert msg.startswith("my model.zip: not a readable zip archive"), msg
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    _assert_nothing_left(engine)


def test_data_that_does_not_fit_the_model_is_refused_before_calibration(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model_path = _save(tiny_cnn()[0], tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    msg = _refused(
        engine, model_path, _labelled_npz(tmp_path / "name.npz", x, np.zeros(40, np.int64), "image")
    )
    assert "'input'" in msg and "image" in msg
    msg = _refused(
        engine, model_path, _labelled_npz(tmp_path / "shape.npz", x[:, :, :4], np.zeros(40, np.int64))
    )
    assert msg.startswith("shape.npz: input 'input': expected shape [batch, 1, 8, 8], found [40, 1, 4, 8]")
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    assert "NaN" in _refused(
        engine, model_path, _labelled_npz(tmp_path / "nan.npz", bad, np.zeros(40, np.int64))
    )
    msg = _refused(engine, model_path, _labelled_npz(tmp_path / "count.npz", x, np.zeros(39, np.int64)))
    assert "39" in msg and "40" in msg
    msg = _refused(engine, model_path, _labelled_npz(tmp_path / "range.npz", x, np.full(40, 12, np.int64)))
    assert "labels go up to 12, but the model's output has 10 classes" in msg
    _assert_nothing_left(engine)


def test_names_are_checked(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    path = _save(tiny_cnn()[0], tmp_path / "m.onnx")
    assert "bundled sample model" in _refused(engine, path, name="digits_cnn")
    assert "not allowed" in _refused(engine, path, name="../etc")
    engine.add_model(path, name="mine")
    assert "already added" in _refused(engine, path, name="mine")
    assert engine.add_model(path).name == "m"  # a free name from the file name


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("My Net v2.onnx", "my-net-v2"),
        ("Übersetzer.onnx", "ubersetzer"),
        ("café_crème.onnx", "cafe_creme"),
        # Letters NFKD does not decompose were dropped: 'straße' -> 'strae', 'łódź' -> 'odz'.
        ("straße.onnx", "strasse"),
        ("łódź.onnx", "lodz"),
        ("søren.onnx", "soren"),
        ("Łódź Ærø.onnx", "lodz-aero"),
        ("Đakovo_þing.onnx", "dakovo_thing"),
        ("ŒUVRE GROẞ.onnx", "oeuvre-gross"),
    ],
)
def test_a_suggested_name_keeps_the_letters_under_accents(
    tmp_path: Path, file_name: str, expected: str
) -> None:
    # Browser QA: 'Übersetzer.onnx' was suggested as 'bersetzer', 'café' as 'caf'.
    from engine.user_models import suggest_name

    assert suggest_name(file_name, tmp_path) == expected


# --- the worker takes the hit -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    os.environ.pop("QUANTDASH_SCHEDULER", None)
    with WorkerPool.connect(workers=1) as p:
        yield p


@pytest.mark.timeout(240)
def test_a_model_that_kills_its_worker_is_refused_and_the_caller_lives(
    pool: WorkerPool, tmp_path: Path
) -> None:
    engine = _engine(tmp_path / "home", pool)
    before = set(pool.worker_pids().values())
    msg = _refused(engine, _save(memory_bomb(), tmp_path / "bomb.onnx"))
    assert msg.startswith("bomb.onnx") and "worker process died" in msg and "The app is unaffected" in msg
    _assert_nothing_left(engine)
    # The pool replaced the dead worker and the next upload is checked as usual.
    added = engine.add_model(_save(tiny_cnn()[0], tmp_path / "ok.onnx"))
    assert added.name == "ok" and set(pool.worker_pids().values()) != before


# --- after review: what an upload leaves, what a message shows, odd but real files ---------------


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _image_zip(path: Path, n: int, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            z.writestr(f"{i}.png", _png(i))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
        names = [f"{i}.png" for i in range(n)] + [x for x in (extra or {}) if x.endswith(".png")]
        z.writestr("labels.csv", "file,label\n" + "\n".join(f"{x},{i % 10}" for i, x in enumerate(names)))
    return path


def test_image_zip_data_leaves_only_the_models_own_files(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    added = engine.add_model(_save(tiny_cnn()[0], tmp_path / "m.onnx"), _image_zip(tmp_path / "px.zip", 40))
    assert sorted(p.name for p in added.folder.iterdir()) == [
        "calib.npz",
        "card.json",
        "eval.npz",
        "model.onnx",
    ]
    assert added.card["task"] == "classification"
    assert added.card["calib_size"] + added.card["eval_size"] == 40
    assert list(models_dir(engine.home).iterdir()) == [added.folder]


def test_messages_name_the_users_files_never_the_servers_folders(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model = _save(tiny_cnn()[0], tmp_path / "m.onnx")
    msg = _refused(engine, model, _image_zip(tmp_path / "px.zip", 8, {"broken.png": b"not a png at all"}))
    assert msg.startswith("px.zip: image 'broken.png' could not be decoded (UnidentifiedImageError: ")
    assert "cannot identify image file 'broken.png'" in msg or "broken.png" in msg.split("(", 1)[1]
    for leak in (str(tmp_path), ".incoming", "data-work", "images-"):
        assert leak not in msg, msg
    _assert_nothing_left(engine)


def test_a_case_no_check_foresaw_is_one_line_about_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import foreign

    def unforeseen(model: onnx.ModelProto) -> None:  # a fault injected where any library could raise
        raise RuntimeError(f"internal failure reading {tmp_path}/home/models/.incoming-1/upload/model.onnx")

    monkeypatch.setattr(foreign, "check_domains", unforeseen)
    engine = _engine(tmp_path / "home")
    msg = _refused(engine, _save(tiny_cnn()[0], tmp_path / "mine.onnx"))
    assert msg.startswith(
        "mine.onnx could not be checked (RuntimeError: internal failure reading model.onnx). Expected an ONNX"
    )
    assert str(tmp_path) not in msg and "\n" not in msg
    _assert_nothing_left(engine)


def test_a_weight_of_an_undefined_data_type_is_named(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    model = legacy_cnn(17, inits_as_inputs=False)
    model.graph.initializer[0].data_type = 99
    msg = _refused(engine, _save(model, tmp_path / "odd.onnx"))
    assert "weight 'conv1.weight' has data type 99, which ONNX does not define" in msg
    _assert_nothing_left(engine)


def test_macos_zip_metadata_is_not_a_second_model(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    with zipfile.ZipFile(tmp_path / "Archive.zip", "w") as z:  # as Finder's Compress makes it
        z.writestr("net/net.onnx", tiny_cnn()[0])
        z.writestr("__MACOSX/net/._net.onnx", b"\x00\x05\x16\x07 AppleDouble")
        z.writestr("net/._net.onnx", b"\x00\x05\x16\x07 AppleDouble")
    added = engine.add_model(tmp_path / "Archive.zip")
    assert len(engine.layers(engine.model(added.name))) == 5
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.onnx", tiny_cnn()[0])
        z.writestr("b/b.onnx", tiny_cnn()[0])
    msg = _refused(engine, tmp_path / "two.zip")
    assert "must hold exactly one .onnx file" in msg and "found 2 (a.onnx, b/b.onnx)" in msg


def test_a_batch_fixed_above_one_is_refused_with_what_to_do(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    msg = _refused(engine, _save(legacy_cnn(17, batch=4, inits_as_inputs=False), tmp_path / "b4.onnx"))
    assert "input 'x' fixes its first (batch) dimension at 4: [4, 1, 8, 8]" in msg
    assert "dynamic_axes={'x': {0: 'batch'}}" in msg
    _assert_nothing_left(engine)


def test_an_input_or_output_without_a_declared_shape_is_named(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "home")
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    for shapeless in ("x", "y"):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
            "shapeless",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, None if shapeless == "x" else ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None if shapeless == "y" else ["N", 3])],
            [w],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        msg = _refused(engine, _save(model, tmp_path / "bare.onnx"))
        kind = "input" if shapeless == "x" else "output"
        assert f"{kind} {shapeless!r} declares no shape, not even how many dimensions it has" in msg
    _assert_nothing_left(engine)


def test_safetensors_of_other_sizes_are_refused_by_name(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from engine.torch_import import export_safetensors
    from tests.models import TinyCNN

    state = TinyCNN().state_dict()
    first = next(iter(state))
    state[first] = torch.zeros((state[first].shape[0] + 1, *state[first].shape[1:]))
    save_file(state, str(tmp_path / "wide.safetensors"))
    (tmp_path / "build.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from tests.models import TinyCNN\n\ndef make():\n    return TinyCNN()\n"
    )
    with pytest.raises(ModelError) as info:
        export_safetensors(
            tmp_path / "wide.safetensors", f"{tmp_path / 'build.py'}:make", {"x": (1, 1, 8, 8)}
        )
    msg = str(info.value)
    assert msg.startswith("wide.safetensors does not fit make(): size mismatch for " + first), msg
    assert "expected the state_dict of the same module" in msg


def test_reading_inputs_in_a_worker_refuses_a_file_by_its_name(pool: WorkerPool, tmp_path: Path) -> None:
    """A refusal is a ModelError (the page caches it per upload); a worker that fails is an EngineError
    (the page does not cache it, so the next run tries again)."""
    engine = _engine(tmp_path / "home", pool)
    path = _save(dynamic_width_model(), tmp_path / "seq.onnx")
    assert engine.declared_inputs(path)[0]["shape"] == ["batch", 2, "length"]
    with pytest.raises(ModelError, match="^junk.onnx"):
        engine.declared_inputs(_save(b"\x00" * 64, tmp_path / "junk.onnx"))


def test_labels_for_a_model_with_one_output_value_name_it_a_regressor_not_one_class() -> None:
    """Browser QA: 'the model's output has 1 classes (0 to 0)' for a regressor given class labels."""
    import numpy as np

    from engine.model_io import ModelError
    from engine.user_models import _labels_fit_outputs

    with pytest.raises(ModelError) as e:
        _labels_fit_outputs("classification", np.array([0, 2, 1]), np.zeros((2, 1), np.float32))
    assert "one output value per sample, so it does not score classes" in str(e.value)
    assert "1 classes" not in str(e.value)
    with pytest.raises(ModelError, match=r"output has 2 classes \(0 to 1\)"):
        _labels_fit_outputs("classification", np.array([0, 2]), np.zeros((2, 2), np.float32))
