"""The hand-off bundle: the chosen quantized model with its plan, its measurements and how to run it.

bundle.zip holds model.onnx (the very file that was measured), plan.json (the plan format the CLI
reads), metrics.json (every figure measured, the machine, the hashes, the recommendation's words)
and README.md. It is written whole or not at all.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from engine.datasets import ModelBundle
from engine.recommend import Recommendation


def _model_opset(path: Path) -> int:
    import onnx

    from engine.model_io import default_opset

    return default_opset(onnx.load(str(path), load_external_data=False), missing=0)


def _example_feeds(inputs: list[dict[str, Any]]) -> list[str]:
    """Python lines that build a zero input of the right shape and dtype for each model input
    (named dimensions such as the batch set to 1), then the feed dict."""
    lines, entries = [], []
    for k, spec in enumerate(inputs):
        shape = tuple(d if isinstance(d, int) else 1 for d in spec["shape"])
        lines.append(
            f"x{k} = np.zeros({shape!r}, dtype=np.{spec['dtype']})  # {spec['name']}: {spec['shape']}"
        )
        entries.append(f"{spec['name']!r}: x{k}")
    return [*lines, "feeds = {" + ", ".join(entries) + "}"]


def _bundle_readme(rec: Recommendation, bundle: ModelBundle, artifact: Path) -> str:
    chosen = rec.chosen or {}
    inputs = bundle.card.get("inputs") or [
        {"name": k, "shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype)}
        for k, v in bundle.eval_set.inputs.items()
    ]
    spec = "\n".join(f"- `{i['name']}`: {i['dtype']}, shape {i['shape']}" for i in inputs)
    lines = [
        f"# {bundle.name}: {chosen.get('plan_summary', '')}",
        "",
        rec.statement,
        "",
        "Files: `model.onnx` (the quantized model), `plan.json` (the precision of each layer),",
        "`metrics.json` (everything measured, with the machine it was measured on).",
        "",
        "## Inputs",
        "",
        spec,
        "",
        "## Run it with ONNX Runtime",
        "",
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
        "",
        'session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
        *_example_feeds(inputs),
        "outputs = session.run(None, feeds)  # replace the zeros with real inputs",
        "```",
        "",
        f"Measured with ONNX Runtime {(chosen.get('environment') or {}).get('onnxruntime')}. The model uses "
        f"ONNX opset {_model_opset(artifact)}: run it with an ONNX Runtime that supports that opset.",
        "",
        "## Caveats",
        "",
        *[f"- {c}" for c in rec.caveats],
        "",
    ]
    return "\n".join(lines)


def write_bundle(rec: Recommendation, bundle: ModelBundle, path: Path) -> Path:
    """bundle.zip: the chosen quantized model, its plan, its metrics, and how to run it."""
    chosen = rec.chosen
    if chosen is None:
        raise ValueError("no plan meets the goal, so there is no model to hand off")
    artifact = Path(chosen.get("artifact_path") or "")
    if not artifact.is_file():
        raise FileNotFoundError(
            f"the built model of {chosen['plan_summary']} is no longer on disk ({artifact}); measure the "
            "plan again with `quantdash evaluate ... --force` and rebuild the report"
        )
    metrics = {k: v for k, v in chosen["metrics"].items() if k != "per_sample_correct"}
    doc = {
        "model_name": bundle.name,
        "plan_summary": chosen["plan_summary"],
        "metrics": metrics,
        "environment": chosen.get("environment"),
        "hashes": {
            k: chosen.get(k) for k in ("key", "model_hash", "data_hash", "plan_hash", "settings_hash")
        },
        "recommendation": {"goal": rec.goal.text, "statement": rec.statement, "caveats": list(rec.caveats)},
    }
    tmp = path.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(artifact, "model.onnx")
        z.writestr("plan.json", json.dumps(chosen["plan"], indent=2) + "\n")
        z.writestr("metrics.json", json.dumps(doc, indent=2, default=str) + "\n")
        z.writestr("README.md", _bundle_readme(rec, bundle, artifact))
    tmp.replace(path)  # a crash mid-write leaves no half-written bundle.zip
    return path
