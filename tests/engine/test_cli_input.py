"""Bad command-line input is refused in one line with exit status 2, before any work; Ctrl-C is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_cli import REPO, run
from tests.models import tiny_cnn

pytestmark = pytest.mark.timeout(300)

EVALUATE = ("evaluate", "digits_cnn", "--preset", "int8", "--inline")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-input-home")


def _refused(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("quantdash ")]
    assert len(said) == 1 and expected in said[0], out.stderr


def test_more_threads_than_cpus_are_refused_by_the_limit(home: Path) -> None:
    cpus = os.cpu_count() or 1
    # Before the check, 100000 threads hung the machine; one more than the CPUs shows the limit as well.
    out = run(home, *EVALUATE, "--batch-sizes", "1", "--threads", str(cpus + 1))
    _refused(out, f"--threads {cpus + 1}: expected 1 to {cpus}, the CPUs of this machine")


@pytest.mark.parametrize("seconds", ["-5", "0", "nan", "inf", "1e400"])
def test_a_timeout_not_above_0_or_not_finite_is_refused(home: Path, seconds: str) -> None:
    out = run(home, *EVALUATE, "--batch-sizes", "1", "--timeout", seconds)
    _refused(out, "must be above 0 seconds and finite; expected e.g. 600")


@pytest.mark.parametrize(
    ("sizes", "why"),
    [
        ("abc", "'abc' is not a whole number"),
        ("1,,2", "an empty item"),
        ("1000000000", "1000000000 is out of range"),
        ("0", "0 is out of range"),
        ("1,1", "1 is given twice"),
    ],
)
def test_batch_sizes_are_parsed_strictly(home: Path, sizes: str, why: str) -> None:
    out = run(home, *EVALUATE, "--batch-sizes", sizes)
    _refused(out, f"--batch-sizes {sizes}: {why}; expected whole numbers from 1 to 1024, comma-separated")
    assert "the inputs of one run are allocated at once" in out.stderr


def test_a_plan_that_is_not_utf8_or_is_a_folder_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_bytes(b"\xff\xfe\x00bad")
    out = run(home, "evaluate", "digits_cnn", "--plan", str(tmp_path / "p.json"), "--inline")
    _refused(out, "p.json is not valid JSON (not UTF-8 text: byte 0xff at position 0); expected a plan like")
    out = run(home, "evaluate", "digits_cnn", "--plan", str(tmp_path), "--inline")
    _refused(out, f"{tmp_path} is a folder; expected a plan .json file like")


def test_a_file_that_is_not_a_store_is_named(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("garbage\n")
    out = run(home, "--store", str(bad), "results")
    _refused(out, f"{bad} is not a quantdash result store (SQLite): file is not a database; expected")
    assert bad.read_text() == "garbage\n"


def test_add_model_refuses_an_empty_name_and_says_where_it_checks(home: Path, tmp_path: Path) -> None:
    out = run(home, "add-model", str(tmp_path / "net.onnx"), "--name", "")
    _refused(out, "--name is empty; expected 1 to 48 characters")
    out = run(home, "add-model", str(tmp_path / "net.onnx"), "--inline")
    assert "checking net.onnx in this process (--inline)" in out.stderr
    assert "worker process" not in out.stderr


def test_unknown_models_list_added_ones_and_remove_model_takes_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = run(home, "inspect", "nosuchmodel", "--inline")
    _refused(out, "nor a model you added (none yet), nor an .onnx file")
    (tmp_path / "net.onnx").write_bytes(tiny_cnn(seed=5)[0])
    added = run(home, "add-model", str(tmp_path / "net.onnx"), "--inline")
    assert added.returncode == 0, added.stderr
    out = run(home, "evaluate", "nosuchmodel", "--preset", "int8", "--inline")
    _refused(out, "nor a model you added (net), nor an .onnx file")

    removed = run(home, "remove-model", "net", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {"removed": "net", "results_kept_in": str(home / "results.sqlite")}
    _refused(run(home, "remove-model", "net", "--json"), "no added model named 'net'")


def test_ctrl_c_is_one_line_and_status_130(tmp_path: Path) -> None:
    env = {**os.environ, "QUANTDASH_HOME": str(tmp_path)}
    env.pop("QUANTDASH_SCHEDULER", None)
    env.pop("QUANTDASH_STORE", None)
    args = ["evaluate", "char_transformer", "--preset", "int8", "--batch-sizes", "1", "--inline"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first progress line: the work has begun
    assert first.startswith("measuring the FP32 baseline"), first
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    said = "quantdash evaluate: interrupted: results measured so far are kept in "
    assert rest.strip().splitlines()[-1] == said + str(tmp_path / "results.sqlite")
