"""Plan-editor logic on the real layer table of tests.models.tiny_cnn (3 Conv, 2 Gemm; the
first Gemm reads 16 features, too few for a 32-weight INT4 block, so it cannot take INT4)."""

from __future__ import annotations

import pytest

from dashboard.plan_logic import apply_edits, editor_frame, estimate_size, set_op_type, uniform
from engine.api import Engine
from engine.store import ResultStore
from engine.types import LayerInfo
from tests.models import tiny_cnn

HEAD = 3  # the row of the Gemm that cannot take INT4


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> list[LayerInfo]:
    home = tmp_path_factory.mktemp("home")
    model = home / "tiny_cnn.onnx"
    model.write_bytes(tiny_cnn()[0])
    engine = Engine(store=ResultStore(home / "r.sqlite"), home=home)
    return engine.layers(engine.model(str(model)))


def test_invalid_row_is_reverted_with_a_reason(layers: list[LayerInfo]) -> None:
    plan = uniform(layers)
    conv, head = layers[0], layers[HEAD]
    new, notes = apply_edits(layers, plan, {0: {"precision": "INT4"}, HEAD: {"precision": "INT4"}})
    assert new[conv.name] == "int4" and new[head.name] == "fp32"
    assert len(notes) == 1 and head.name in notes[0] and "only 16" in notes[0] and "accepts FP32" in notes[0]


def test_op_type_bulk_set_skips_layers_that_cannot_take_it(layers: list[LayerInfo]) -> None:
    new, changed, skipped = set_op_type(layers, uniform(layers), "MatMul", "int4")
    assert (
        (changed, skipped) == (1, 1) and new[layers[HEAD].name] == "fp32" and new[layers[-1].name] == "int4"
    )
    new, changed, skipped = set_op_type(layers, uniform(layers), "Conv", "int4")
    assert (changed, skipped) == (3, 0) and [new[x.name] for x in layers[:3]] == ["int4"] * 3


def test_estimate_follows_bits_per_weight(layers: list[LayerInfo]) -> None:
    total = sum(x.weight_bytes for x in layers) + 1000  # 1000 bytes outside the layers
    assert estimate_size(layers, uniform(layers), total) == total
    int8 = estimate_size(layers, uniform(layers, "int8"), total)
    assert int8 == pytest.approx(1000 + sum(x.weight_bytes for x in layers) / 4, abs=len(layers))
    assert estimate_size(layers, uniform(layers, "fp16"), total) > int8


def test_editor_rows_show_labels(layers: list[LayerInfo]) -> None:
    frame = editor_frame(layers, uniform(layers, "int8-dynamic"))
    assert list(frame["precision"]) == ["INT8 dyn"] * len(layers)
    assert "INT4" in frame["accepts"][0] and "INT4" not in frame["accepts"][HEAD]
