"""The `quantdash` command as a user runs it: real processes, real store file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models import tiny_cnn

REPO = Path(__file__).resolve().parents[2]


def run(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUANTDASH_HOME": str(home)}
    env.pop("QUANTDASH_SCHEDULER", None)
    env.pop("QUANTDASH_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-home")


def test_models_lists_the_samples(home: Path) -> None:
    out = run(home, "models", "--json")
    assert out.returncode == 0, out.stderr
    names = {c["name"] for c in json.loads(out.stdout)}
    assert "digits_cnn" in names


def test_inspect_json_has_the_layer_table(home: Path) -> None:
    out = run(home, "inspect", "digits_cnn", "--json", "--inline")
    assert out.returncode == 0, out.stderr
    layers = json.loads(out.stdout)["layers"]
    assert layers and {"name", "op_type", "params", "macs", "weight_bytes", "accepts", "rejects"} <= set(
        layers[0]
    )
    convs = [x for x in layers if x["op_type"] == "Conv"]
    assert convs and all("int4" in x["accepts"] and not x["rejects"] for x in convs)


def test_evaluate_preset_in_a_worker_then_results(home: Path) -> None:
    out = run(home, "evaluate", "digits_cnn", "--preset", "int8-except-ends", "--batch-sizes", "1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    result, base = data["result"], data["baseline"]
    assert result["status"] == "ok" and base["status"] == "ok"
    realized = result["metrics"]["realized"]
    names = list(realized)
    assert realized[names[0]] == "fp32" and realized[names[-1]] == "fp32"
    assert all(realized[n] == "int8" for n in names[1:-1])
    listed = run(home, "results", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {r["key"] for r in json.loads(listed.stdout)}
    assert {result["key"], base["key"]} <= keys


def test_evaluate_text_output_names_cpu_and_ci(home: Path) -> None:
    out = run(home, "evaluate", "digits_cnn", "--preset", "fp16", "--batch-sizes", "1", "--inline")
    assert out.returncode == 0, out.stderr
    assert "95% CI" in out.stdout and "onnxruntime" in out.stdout and "measured on" in out.stdout


def test_an_onnx_files_results_are_listed_by_its_path_apart_from_a_model_of_its_stem(
    home: Path, tmp_path: Path
) -> None:
    """CLI QA: a file's results were kept under its stem, the name an added model may have too."""
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_cnn()[0])
    out = run(home, "evaluate", str(model), "--preset", "fp16", "--batch-sizes", "1", "--inline", "--json")
    assert out.returncode == 0, out.stderr
    key = json.loads(out.stdout)["result"]["key"]
    listed = json.loads(run(home, "results", "--model", str(model), "--json").stdout)
    assert key in {r["key"] for r in listed} and {r["model_name"] for r in listed} == {"tiny.onnx"}
    assert json.loads(run(home, "results", "--model", "tiny", "--json").stdout) == []

    # Review: another file of the same name, in another folder, is another model; listed apart.
    other = tmp_path / "elsewhere" / "tiny.onnx"
    other.parent.mkdir()
    other.write_bytes(tiny_cnn(seed=3)[0])
    out = run(home, "evaluate", str(other), "--preset", "fp16", "--batch-sizes", "1", "--inline", "--json")
    assert out.returncode == 0, out.stderr
    other_key = json.loads(out.stdout)["result"]["key"]
    listed = {r["key"] for r in json.loads(run(home, "results", "--model", str(model), "--json").stdout)}
    assert key in listed and other_key not in listed
    listed = {r["key"] for r in json.loads(run(home, "results", "--model", str(other), "--json").stdout)}
    assert other_key in listed and key not in listed


@pytest.mark.parametrize(
    ("plan_text", "expected"),
    [
        ("{not json", r"is not valid JSON \(line 1, column 2.*expected a plan like"),
        ('{"default": "int3"}', r"unknown precision 'int3'; expected one of: fp32, fp16, int8"),
        (
            '{"layers": {"/nope/Conv": "int8"}}',
            r"unknown layer '/nope/Conv'.*valid layer names are: /conv1/Conv",
        ),
        # On tiny_cnn (below): its first Linear reads 16 features, too few for a 32-weight INT4 block.
        ('{"layers": {"/head/Gemm": "int4"}}', r"cannot take int4: .*only 16.*It accepts: fp32, fp16, int8"),
        ('["int8"]', r"plan must be a JSON object"),
    ],
)
def test_bad_plans_get_a_clear_message(home: Path, tmp_path: Path, plan_text: str, expected: str) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(plan_text)
    model = "digits_cnn"
    if "/head/" in plan_text:
        model = str(tmp_path / "tiny_cnn.onnx")
        Path(model).write_bytes(tiny_cnn()[0])
    out = run(home, "evaluate", model, "--plan", str(plan), "--inline")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert re.search(expected, out.stderr), out.stderr


def test_unknown_preset_and_model(home: Path) -> None:
    out = run(home, "evaluate", "digits_cnn", "--preset", "int2", "--inline")
    assert out.returncode == 2 and "unknown preset 'int2'; choose one of: fp32, fp16, int8" in out.stderr
    out = run(home, "inspect", "no_such_model", "--inline")
    assert out.returncode == 2 and "neither a sample model" in out.stderr
