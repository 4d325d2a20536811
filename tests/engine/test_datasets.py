"""Loading models and data: clear refusals for bad cards and data, synthetic inputs that fit the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.datasets import load_model, synthetic_inputs
from engine.model_io import ModelError, prepare_model
from tests.models import tiny_cnn


def _folder(tmp_path: Path, card: object, eval_npz: bool = True) -> Path:
    (tmp_path / "model.onnx").write_bytes(tiny_cnn()[0])
    (tmp_path / "card.json").write_text(json.dumps(card))
    if eval_npz:
        np.savez(tmp_path / "eval.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.arange(4))
    return tmp_path / "model.onnx"


def test_a_card_without_inputs_is_refused_by_name(tmp_path: Path) -> None:
    path = _folder(tmp_path, {"task": "classification"})
    with pytest.raises(ModelError, match=r"card.json is not a valid model card .*'inputs'"):
        load_model(str(path))


def test_an_unknown_task_is_refused(tmp_path: Path) -> None:
    path = _folder(tmp_path, {"task": "regression", "inputs": [{"name": "input"}]})
    with pytest.raises(ModelError, match="task 'regression' is not one of"):
        load_model(str(path))


def test_label_count_mismatch_names_both_counts(tmp_path: Path) -> None:
    path = _folder(tmp_path, {"task": "classification", "inputs": [{"name": "input"}]}, eval_npz=False)
    np.savez(tmp_path / "eval.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.arange(3))
    with pytest.raises(ModelError, match="3 labels for 4 samples"):
        load_model(str(path))


def test_a_pickled_npz_is_never_loaded(tmp_path: Path) -> None:
    path = _folder(tmp_path, {"task": "classification", "inputs": [{"name": "input"}]}, eval_npz=False)
    np.savez(tmp_path / "eval.npz", input=np.array([{"x": 1}], dtype=object), labels=np.arange(1))
    with pytest.raises(ModelError, match="not a readable .npz of plain arrays"):
        load_model(str(path))


def test_synthetic_inputs_keep_a_static_batch_and_fill_a_dynamic_one() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    t = helper.make_tensor_value_info("t", TensorProto.INT64, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x, t], [y])
    data = synthetic_inputs(helper.make_model(graph).SerializeToString(), rows=8)
    assert data["x"].shape == (1, 3) and data["x"].dtype == np.float32
    assert data["t"].shape == (8, 2) and data["t"].dtype == np.int64


def test_generated_node_names_never_collide_with_given_ones() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="Relu_1"),  # the name node 1 would be given
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    prepared = onnx.load_from_string(prepare_model(model.SerializeToString()))
    names = [n.name for n in prepared.graph.node]
    assert len(names) == len(set(names)) and all(names)


def test_an_onnx_files_results_are_named_so_no_added_model_shares_the_name(tmp_path: Path) -> None:
    """CLI QA: `evaluate ./mine.onnx` kept results under "mine", the name of an added model too, and
    `results mine` listed both models' plans as one."""
    from engine.user_models import _NAME

    path = tmp_path / "mine.onnx"
    path.write_bytes(tiny_cnn()[0])
    name = load_model(str(path)).name
    assert name == "mine.onnx" and not _NAME.fullmatch(name)  # no added model can be named so
