"""Plan-editor logic on the real digits_cnn layer table (3 Conv, 2 Gemm)."""

from __future__ import annotations

import pytest

from dashboard.plan_logic import apply_edits, editor_frame, estimate_size, set_op_type, uniform
from engine.api import Engine
from engine.store import ResultStore
from engine.types import LayerInfo


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> list[LayerInfo]:
    home = tmp_path_factory.mktemp("home")
    engine = Engine(store=ResultStore(home / "r.sqlite"), home=home)
    return engine.layers(engine.model("digits_cnn"))


def test_invalid_row_is_reverted_with_a_reason(layers: list[LayerInfo]) -> None:
    plan = uniform(layers)
    conv, gemm = layers[0], layers[-1]
    new, notes = apply_edits(layers, plan, {0: {"precision": "INT4"}, len(layers) - 1: {"precision": "INT4"}})
    assert new[conv.name] == "fp32" and new[gemm.name] == "int4"
    assert len(notes) == 1 and conv.name in notes[0] and "MatMul" in notes[0] and "accepts FP32" in notes[0]


def test_op_type_bulk_set_skips_layers_that_cannot_take_it(layers: list[LayerInfo]) -> None:
    new, changed, skipped = set_op_type(layers, uniform(layers), "Conv", "int4")
    assert (changed, skipped) == (0, 3) and set(new.values()) == {"fp32"}
    op = layers[-1].op_type
    new, changed, _ = set_op_type(layers, uniform(layers), op, "int4")
    assert changed == sum(x.op_type == op for x in layers) and new[layers[-1].name] == "int4"


def test_estimate_follows_bits_per_weight(layers: list[LayerInfo]) -> None:
    total = sum(x.weight_bytes for x in layers) + 1000  # 1000 bytes outside the layers
    assert estimate_size(layers, uniform(layers), total) == total
    int8 = estimate_size(layers, uniform(layers, "int8"), total)
    assert int8 == pytest.approx(1000 + sum(x.weight_bytes for x in layers) / 4, abs=len(layers))
    assert estimate_size(layers, uniform(layers, "fp16"), total) > int8


def test_editor_rows_show_labels(layers: list[LayerInfo]) -> None:
    frame = editor_frame(layers, uniform(layers, "int8-dynamic"))
    assert list(frame["precision"]) == ["INT8 dyn"] * len(layers)
    assert "INT4" not in frame["accepts"][0]
