"""`quantdash add-model` as a user runs it: real processes, a real worker pool, a real store."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.engine.test_cli import run
from tests.models import TinyCNN, tiny_cnn

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("add-model-home")


def test_add_then_use_by_name_in_every_command(home: Path, tmp_path: Path) -> None:
    model_bytes, inputs = tiny_cnn(seed=5)
    (tmp_path / "net.onnx").write_bytes(model_bytes)
    np.savez(tmp_path / "data.npz", input=inputs["input"], labels=np.arange(64) % 10)
    out = run(
        home, "add-model", str(tmp_path / "net.onnx"), "--data", str(tmp_path / "data.npz"), "--name", "net"
    )
    assert out.returncode == 0, out.stderr
    assert "added 'net': 5 layers" in out.stdout and "accuracy on 48 labelled samples" in out.stdout
    assert "checking net.onnx in a worker process" in out.stderr

    table = run(home, "models").stdout
    # Its card has no FP32 metrics (they are measured by its first evaluation): say so, not "{}".
    assert (
        next(line for line in table.splitlines() if line.startswith("net "))
        .rstrip()
        .endswith("measured on first evaluate (see results)")
    )
    listed = json.loads(run(home, "models", "--json").stdout)
    assert {"name": "net", "added": True}.items() <= next(c for c in listed if c["name"] == "net").items()
    inspected = json.loads(run(home, "inspect", "net", "--json", "--inline").stdout)
    assert len(inspected["layers"]) == 5
    ev = run(home, "evaluate", "net", "--preset", "int8", "--batch-sizes", "1", "--inline", "--json")
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)["result"]
    assert result["status"] == "ok" and result["model_name"] == "net"
    assert result["metrics"]["accuracy"] is not None

    again = run(home, "add-model", str(tmp_path / "net.onnx"), "--name", "net")
    assert again.returncode == 2 and "already added" in again.stderr
    gone = run(home, "remove-model", "net")
    assert gone.returncode == 0 and "net" not in {
        c["name"] for c in json.loads(run(home, "models", "--json").stdout)
    }


def test_refusal_is_one_paragraph_and_a_nonzero_status(home: Path, tmp_path: Path) -> None:
    (tmp_path / "garbage.onnx").write_bytes(np.random.default_rng(0).bytes(2000))
    out = run(home, "add-model", str(tmp_path / "garbage.onnx"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("quantdash add-model:")]
    assert len(said) == 1 and said[0].startswith("quantdash add-model: garbage.onnx")
    (tmp_path / "weights.pth").write_bytes(b"\x80\x04K\x01.")
    out = run(home, "add-model", str(tmp_path / "weights.pth"))
    assert out.returncode == 2 and "safetensors" in out.stderr and "Traceback" not in out.stderr


def test_safetensors_with_an_entry_point_is_exported_and_added(home: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    save_file(net.state_dict(), str(tmp_path / "tiny.safetensors"))
    (tmp_path / "build.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from tests.models import TinyCNN

            def make():
                return TinyCNN()
            """
        )
    )
    out = run(
        home, "add-model", str(tmp_path / "tiny.safetensors"), "--entry", f"{tmp_path / 'build.py'}:make",
        "--shape", "image=1x1x8x8", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["name"] == "tiny" and added["card"]["synthetic"] and added["card"]["layers"] == 5
    assert added["card"]["inputs"] == [{"name": "image", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    no_entry = run(home, "add-model", str(tmp_path / "tiny.safetensors"))
    assert no_entry.returncode == 2 and "--entry FILE.py:FUNCTION" in no_entry.stderr


def test_an_example_shape_torch_cannot_allocate_is_refused_by_name(home: Path, tmp_path: Path) -> None:
    save_file(TinyCNN().state_dict(), str(tmp_path / "tiny.safetensors"))
    (tmp_path / "build.py").write_text(
        "def make():\n    raise AssertionError('not reached: the shape is checked first')\n"
    )
    entry = ("--entry", f"{tmp_path / 'build.py'}:make")
    huge = run(
        home, "add-model", str(tmp_path / "tiny.safetensors"), *entry, "--shape", "image=1x1x100000x100000"
    )
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
    assert (
        "--shape image=1x1x100000x100000: an example input of 37.3 GiB; expected at most 1 GiB" in huge.stderr
    )
    zero = run(home, "add-model", str(tmp_path / "tiny.safetensors"), *entry, "--shape", "image=1x1x0x8")
    assert (
        zero.returncode == 2
        and "image=1x1x0x8: every size must be a whole number of at least 1" in zero.stderr
    )


def test_an_entry_point_that_raises_is_named_with_its_line_not_a_traceback(
    home: Path, tmp_path: Path
) -> None:
    save_file(TinyCNN().state_dict(), str(tmp_path / "tiny.safetensors"))
    weights, shape = str(tmp_path / "tiny.safetensors"), ("--shape", "image=1x1x8x8")
    (tmp_path / "build.py").write_text("def make():\n    width = 0\n    return 1 / width\n")
    out = run(home, "add-model", weights, "--entry", f"{tmp_path / 'build.py'}:make", *shape)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--entry: make() raised ZeroDivisionError at build.py line 3: division by zero" in out.stderr
    (tmp_path / "broken.py").write_text("import torch\n\ndef make(:\n    pass\n")
    out = run(home, "add-model", weights, "--entry", f"{tmp_path / 'broken.py'}:make", *shape)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--entry: running broken.py raised SyntaxError at broken.py line 3" in out.stderr
