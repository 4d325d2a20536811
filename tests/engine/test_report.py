"""The stakeholder report as a reader gets it: report.html opened in real Chromium, report.pdf's
text, the plot images, and the hand-off bundle's model run in ONNX Runtime."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from engine import measure
from engine.api import Engine
from engine.goal import parse_goal
from engine.render import chromium_path
from engine.report import ReportFiles, build_report, ensure_candidates, search_section
from engine.search import SearchSpec, run_search
from engine.sensitivity import run_sensitivity
from engine.store import ResultStore
from engine.types import MeasureSettings, Plan, Precision

REPO = Path(__file__).resolve().parents[2]
SETTINGS = MeasureSettings(batch_sizes=(1,), max_seconds=0.5)
GOAL = "smallest model within 1 point of FP32 accuracy"
SECTIONS = (
    "Summary", "Caveats", "Pareto plots", "Candidate plans", "Chosen plan: precision per layer",
    "Per-layer sensitivity", "Mixed-precision search", "Method", "Reproducibility manifest",
)  # fmt: skip


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    home = tmp_path_factory.mktemp("report-home")
    return Engine(store=ResultStore(home / "results.sqlite"), home=home, settings=SETTINGS)


@pytest.fixture(scope="module")
def report(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    bundle = engine.model("digits_cnn")
    ensure_candidates(engine, bundle)
    # The sensitivity chart appears in the report only once a pass was run; run the INT8 probes.
    int8 = {x.name: (Precision.FP32, Precision.INT8) for x in engine.layers(bundle)}
    run_sensitivity(engine, bundle, candidates=int8)
    # ... and the search section once a search was: a small one, 3 plans of its own.
    run_search(engine, bundle, SearchSpec(int8, max_evaluations=3))
    return build_report(engine, bundle, parse_goal(GOAL), tmp_path_factory.mktemp("report"))


def test_everything_is_written(report: ReportFiles) -> None:
    assert report.render_error is None, report.render_error
    assert report.html.is_file() and report.pdf is not None and report.pdf.is_file() and report.bundle
    names = sorted(p.name for p in report.images)
    assert names == sorted(
        f"{f}.{x}" for f in ("pareto", "precision_map", "sensitivity") for x in ("png", "svg")
    )


def test_html_opens_offline_in_chromium_without_errors_and_draws_its_plots(report: ReportFiles) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Self-contained: any request that is not the file itself would fail offline.
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("file:")
                else (outside.append(route.request.url), route.abort())
            ),
        )
        page.goto(report.html.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        figures = page.eval_on_selector_all(".js-plotly-plot", "els => els.map(e => e.id)")
        points = page.eval_on_selector_all("#fig-pareto .scatterlayer .point", "els => els.length")
        bars = page.eval_on_selector_all("#fig-sensitivity .barlayer .point", "els => els.length")
        headline = page.inner_text("#summary .headline")
        browser.close()
    assert errors == [] and outside == []
    assert figures == ["fig-pareto", "fig-precision_map", "fig-sensitivity"]
    assert points >= 3 * 7 and bars >= 5  # 7 plans on each of the 3 panels; one INT8 bar per layer
    assert headline == report.recommendation.headline


def test_pdf_has_every_section_and_the_figures_it_states(report: ReportFiles) -> None:
    from pypdf import PdfReader

    assert report.pdf is not None
    text = " ".join((page.extract_text() or "") for page in PdfReader(report.pdf).pages)
    text = " ".join(text.split())
    for heading in SECTIONS:
        assert heading in text, heading
    rec = report.recommendation
    assert rec.headline in text and "95% CI" in text
    assert rec.chosen is not None and rec.chosen["model_hash"] in text.replace(" ", "")
    assert "ONNX Runtime" in text and ort.__version__ in text
    assert "The latest search measured" in text and "additive predictor expected" in text


def test_images_are_real_png_and_svg(report: ReportFiles) -> None:
    for path in report.images:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg") and len(data) > 5_000


def test_bundle_model_reproduces_the_stored_accuracy(
    engine: Engine, report: ReportFiles, tmp_path: Path
) -> None:
    assert report.bundle is not None
    with zipfile.ZipFile(report.bundle) as z:
        assert sorted(z.namelist()) == ["README.md", "metrics.json", "model.onnx", "plan.json"]
        z.extractall(tmp_path)
    chosen = report.recommendation.chosen
    assert chosen is not None
    assert Plan.from_json(json.loads((tmp_path / "plan.json").read_text())).to_json() == chosen["plan"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"] == chosen["metrics"]["accuracy"]
    # The README's snippet runs as written, in the unpacked bundle's folder.
    readme = (tmp_path / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run([sys.executable, "-c", snippet + "\nprint(outputs[0].shape)"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0 and ran.stdout.strip() == "(1, 10)", ran.stderr

    bundle = engine.model("digits_cnn")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    logits = np.concatenate(
        [session.run(None, {name: x})[0] for x in np.array_split(bundle.eval_set.inputs[name], 8)]
    )
    labels = bundle.eval_set.labels
    assert labels is not None
    accuracy = measure.task_metrics("classification", logits, labels)["accuracy"]
    assert accuracy == pytest.approx(chosen["metrics"]["accuracy"], abs=1e-12)


def test_without_chromium_the_html_and_bundle_still_come(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    files = build_report(engine, engine.model("digits_cnn"), parse_goal(GOAL), tmp_path / "out")
    assert files.pdf is None and files.images == ()
    assert files.render_error is not None and "apt-get install chromium" in files.render_error
    assert files.html.is_file() and files.bundle is not None and files.bundle.is_file()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUANTDASH_HOME": str(home)}
    env.pop("QUANTDASH_SCHEDULER", None)
    env.pop("QUANTDASH_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_report_evaluates_what_it_must_and_writes_every_file(tmp_path: Path) -> None:
    args = (
        "digits_cnn",
        "--goal",
        GOAL,
        "--out",
        str(tmp_path / "r"),
        "--json",
        "--inline",
        "--batch-sizes",
        "1",
    )
    out = _cli(tmp_path / "home", *args)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    assert data["recommended"] and data["render_error"] is None and "95% CI" in data["statement"]
    for f in ("report.html", "report.pdf", "bundle.zip", "images/pareto.png", "images/pareto.svg"):
        assert (tmp_path / "r" / f).is_file(), f
    # The presets were measured first: the store now holds the FP32 baseline and each preset.
    with ResultStore(tmp_path / "home" / "results.sqlite") as store:
        assert store.count("ok") >= 7


def test_cli_report_refuses_a_goal_it_cannot_read_and_says_when_nothing_meets_one(tmp_path: Path) -> None:
    out = _cli(tmp_path / "home", "digits_cnn", "--goal", "make it good", "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "could not read the goal 'make it good'" in out.stderr
    assert not (tmp_path / "r").exists()
    out = _cli(tmp_path / "home", "digits_cnn", "--goal", "smallest under 1 kB", "--out", str(tmp_path / "r"),
               "--inline", "--no-pdf", "--batch-sizes", "1")  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "No measured plan of digits_cnn meets the goal" in out.stdout and "Closest:" in out.stdout
    assert (tmp_path / "r" / "report.html").is_file() and not (tmp_path / "r" / "bundle.zip").exists()


def test_cli_report_on_a_model_without_labelled_data_says_why_not(tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((REPO / "sample_models" / "digits_cnn" / "model.onnx").read_bytes())
    out = _cli(tmp_path / "home", str(bare), "--goal", GOAL, "--out", str(tmp_path / "r"), "--inline",
               "--no-pdf", "--batch-sizes", "1")  # fmt: skip
    assert out.returncode == 2 and "bare.onnx has no labelled evaluation data" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "measuring" not in out.stderr  # refused before any work


def test_cli_report_adds_batch_1_to_the_latency_batch_sizes(tmp_path: Path) -> None:
    args = ("digits_cnn", "--goal", "fastest", "--out", str(tmp_path / "r"), "--inline", "--no-pdf")
    out = _cli(tmp_path / "home", *args, "--batch-sizes", "8")
    assert out.returncode == 0, out.stderr
    with ResultStore(tmp_path / "home" / "results.sqlite") as store:
        frame = store.to_frame("digits_cnn")
    assert len(frame) == 7 and all(set(m["latency"]) == {"1", "8"} for m in frame["metrics"])


def test_a_rebuild_leaves_no_file_of_the_previous_report(
    engine: Engine, report: ReportFiles, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    shutil.copytree(report.out_dir, again)
    files = build_report(
        engine, engine.model("digits_cnn"), parse_goal("smallest under 1 kB"), again, pdf=False
    )
    assert files.recommendation.chosen is None
    assert sorted(p.name for p in again.iterdir()) == ["report.html"]  # no stale PDF, bundle or images


def test_a_chosen_plan_whose_model_file_is_gone_is_measured_again(engine: Engine, tmp_path: Path) -> None:
    bundle = engine.model("digits_cnn")
    first = build_report(engine, bundle, parse_goal(GOAL), tmp_path / "a", pdf=False)
    assert first.recommendation.chosen is not None
    Path(first.recommendation.chosen["artifact_path"]).unlink()
    second = build_report(engine, bundle, parse_goal(GOAL), tmp_path / "b", pdf=False)
    assert second.bundle is not None and second.bundle.is_file()
    assert second.recommendation.chosen is not None
    assert Path(second.recommendation.chosen["artifact_path"]).is_file()


def test_the_search_section_gives_each_measured_change_with_its_interval(
    engine: Engine, report: ReportFiles
) -> None:
    section = search_section(engine, report.recommendation)
    header = re.findall(r"<th>(.*?)</th>", section)
    column = header.index("change vs FP32 (95% CI), points, measured")
    rows = [re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)]
    measured = [cells[column] for cells in rows if cells]
    assert len(measured) >= 3  # the search's own plans
    number = r"([-+]\d+\.\d\d)"
    for text in measured:
        found = re.fullmatch(rf"{number} \({number} to {number}\)", text)
        assert found, text
        change, low, high = (float(x) for x in found.groups())
        assert low <= change <= high, text
    # The predictor is judged on the plans it had a word on: not the FP32 baseline (exact by
    # construction) nor the uniform plans its latency scale was set by (they have no latency prediction).
    assert re.search(r"over the \d+ plans it proposed or NSGA-II found, it was off by", section), section[
        :600
    ]
    found_by, predicted_latency = header.index("found by"), header.index("latency ms, measured") + 1
    anchors = [cells for cells in rows if cells and cells[found_by] == "anchor"]
    assert anchors and all(cells[predicted_latency] == "—" for cells in anchors)


def test_the_reports_pareto_panels_are_explores(engine: Engine, report: ReportFiles) -> None:
    """Browser QA: Explore's third panel was 'Size vs latency', the report's 'Latency vs size' with
    its axes swapped."""
    from engine.report import pareto_report_figure, recommendation_for

    bundle = engine.model("digits_cnn")
    fig = pareto_report_figure(engine, recommendation_for(engine, bundle, parse_goal(GOAL)))
    assert [a.text for a in fig.layout.annotations] == [
        "<b>Accuracy vs size</b>",
        "<b>Accuracy vs latency</b>",
        "<b>Size vs latency</b>",
    ]
    assert fig.layout.xaxis3.title.text.startswith("Latency") and fig.layout.yaxis3.title.text.startswith(
        "Model size"
    )
