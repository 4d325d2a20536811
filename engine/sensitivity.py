"""Per-layer sensitivity: what each layer costs in accuracy at each precision, and its share of time.

Two views, both measured plans like any other (stored, served from the store when asked again):

* "alone": one layer at a candidate precision, every other layer FP32. Its accuracy change and
  output SQNR say how much that layer alone is hurt; its size change what it alone saves.
* "keep_fp32": the reference plan (every layer that accepts it at INT8) with one layer kept
  FP32. Its gain over the reference says what keeping that layer buys back.

The plans are measured without latency (timing 80 plans would take minutes and each layer's
time comes from one profile per precision instead, see engine/profile.py). Everything is read
back from the store, so a pass that is still running (or was interrupted) gives what it has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from engine import measure
from engine.api import Engine
from engine.datasets import ModelBundle
from engine.evaluate import ModelCache, atomic_write
from engine.profile import OTHER, profile_plan_task
from engine.types import LayerInfo, MeasureSettings, Plan, Precision, stable_hash

REFERENCE = Precision.INT8  # the "everything low" plan of the keep_fp32 view
ALONE = "alone"
KEEP_FP32 = "keep_fp32"
PROFILE_RUNS = 50
# Layers whose "alone" probes one worker task measures. Pairs saved 15-25% of the task time on
# digits_resnet's later layers (their FP32 beginning is most of the model) and nothing on its first
# ones; larger groups saved little more and make a failed group's plan-by-plan rerun longer.
LAYERS_PER_TASK = 2

SENSITIVITY_COLUMNS = [
    "layer",
    "op_type",
    "view",
    "precision",
    "status",
    "accuracy_change",  # alone: vs FP32; keep_fp32: gain vs the reference plan (fractions)
    "ci_low",
    "ci_high",
    "sqnr_db",
    "size_change_bytes",  # alone: vs FP32; keep_fp32: vs the reference plan
    "error",
]


@dataclass(frozen=True)
class Probe:
    """One sensitivity plan: a layer, the precision it is probed at, and the view."""

    layer: str
    precision: Precision
    view: str
    plan: Plan


def candidate_precisions(
    layers: list[LayerInfo], allowed: Iterable[Precision] | None = None
) -> dict[str, tuple[Precision, ...]]:
    """Per layer: the precisions it accepts (FP32 first), limited to `allowed` if given."""
    keep = set(allowed) if allowed is not None else set(Precision)
    keep.add(Precision.FP32)
    return {x.name: tuple(p for p in x.accepts if p in keep) for x in layers}


def uniform_plan(layers: list[LayerInfo], precision: Precision) -> Plan:
    """Every layer that accepts `precision` at it, the rest FP32."""
    return Plan(layers={x.name: precision for x in layers if precision in x.accepts})


def reference_plan(layers: list[LayerInfo]) -> Plan:
    """The keep_fp32 view's starting point: every layer that accepts it at INT8."""
    return uniform_plan(layers, REFERENCE)


def probes(layers: list[LayerInfo], candidates: Mapping[str, tuple[Precision, ...]]) -> list[Probe]:
    """The plans of a sensitivity pass: every (layer, candidate precision) alone, then keep_fp32."""
    out = [
        Probe(x.name, p, ALONE, Plan(layers={x.name: p}))
        for x in layers
        for p in candidates.get(x.name, ())
        if p is not Precision.FP32
    ]
    ref = reference_plan(layers)
    out += [
        Probe(name, Precision.FP32, KEEP_FP32, Plan(layers={**ref.layers, name: Precision.FP32}))
        for name in ref.layers
    ]
    return out


def sensitivity_settings(settings: MeasureSettings) -> MeasureSettings:
    return replace(settings, latency=False)


def run_sensitivity(
    engine: Engine,
    bundle: ModelBundle,
    settings: MeasureSettings | None = None,
    candidates: Mapping[str, tuple[Precision, ...]] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    views: tuple[str, ...] = (ALONE, KEEP_FP32),
) -> pd.DataFrame:
    """Measure every probe of the given views (stored ones are not measured again);
    on_progress(done, total). Returns the sensitivity frame of those views."""
    settings = sensitivity_settings(settings or engine.settings)
    layers = engine.layers(bundle)
    candidates = candidates or candidate_precisions(layers)
    chosen = [p for p in probes(layers, candidates) if p.view in views]
    references = [reference_plan(layers)] if KEEP_FP32 in views else []
    plans = [Plan(), *references, *(p.plan for p in chosen)]
    done = 0

    def landed(_: int, __: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(done, len(plans))

    # One layer's probes share the FP32 model up to that layer, and two neighbouring layers' probes
    # share it up to the first of them: measured together, it runs once for all of them.
    first = len(plans) - len(chosen)
    by_layer: dict[str, list[int]] = {}
    for index, probe in enumerate(chosen, start=first):
        if probe.view == ALONE:
            by_layer.setdefault(probe.layer, []).append(index)
    per_layer = list(by_layer.values())
    together = [
        [i for group in per_layer[k : k + LAYERS_PER_TASK] for i in group]
        for k in range(0, len(per_layer), LAYERS_PER_TASK)
    ]
    engine.evaluate_many(
        bundle,
        plans,
        settings=settings,
        source="sensitivity",
        on_done=landed,
        together=together,
    )
    frame = sensitivity_frame(engine, bundle, settings, candidates)
    return frame[frame["view"].isin(views)].reset_index(drop=True)


def _accuracy(record: dict[str, Any] | None) -> float | None:
    if not record or record.get("status") != "ok":
        return None
    value = record["metrics"].get("accuracy")
    return float(value) if value is not None else None


def _gain_ci(
    reference: dict[str, Any], kept: dict[str, Any], settings: MeasureSettings
) -> tuple[float, float]:
    """Paired-bootstrap 95% interval of kept - reference accuracy (NaN if the scores are missing)."""
    a = reference["metrics"].get("per_sample_correct")
    b = kept["metrics"].get("per_sample_correct")
    if not a or not b:
        return float("nan"), float("nan")
    _, low, high = measure.bootstrap_delta_ci(
        measure.decode_scores(a), measure.decode_scores(b), n_boot=settings.bootstrap, seed=settings.seed
    )
    return low, high


def sensitivity_frame(
    engine: Engine,
    bundle: ModelBundle,
    settings: MeasureSettings | None = None,
    candidates: Mapping[str, tuple[Precision, ...]] | None = None,
) -> pd.DataFrame:
    """The sensitivity table from what the store holds now: one row per probe, status 'pending'
    for probes not measured yet."""
    settings = sensitivity_settings(settings or engine.settings)
    layers = engine.layers(bundle)
    op_types = {x.name: x.op_type for x in layers}
    candidates = candidates or candidate_precisions(layers)

    def stored(plan: Plan) -> dict[str, Any] | None:
        return engine.store.get(engine.job(bundle, plan, settings).key)

    base = stored(Plan())
    ref = stored(reference_plan(layers))
    rows = []
    for probe in probes(layers, candidates):
        record = stored(probe.plan)
        row: dict[str, Any] = {
            "layer": probe.layer,
            "op_type": op_types[probe.layer],
            "view": probe.view,
            "precision": probe.precision.value,
            "status": record["status"] if record else "pending",
            "error": record.get("error") if record else None,
        }
        if record and record["status"] == "ok":
            m = record["metrics"]
            row["sqnr_db"] = m.get("sqnr_db")
            if probe.view == ALONE:
                row["accuracy_change"] = m.get("accuracy_delta")
                row["ci_low"] = m.get("accuracy_delta_ci_low")
                row["ci_high"] = m.get("accuracy_delta_ci_high")
                if base and base["status"] == "ok":
                    row["size_change_bytes"] = m["size_bytes"] - base["metrics"]["size_bytes"]
            elif ref and ref["status"] == "ok":
                acc, ref_acc = _accuracy(record), _accuracy(ref)
                if acc is not None and ref_acc is not None:
                    row["accuracy_change"] = acc - ref_acc
                    row["ci_low"], row["ci_high"] = _gain_ci(ref, record, settings)
                row["size_change_bytes"] = m["size_bytes"] - ref["metrics"]["size_bytes"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
    return frame.astype(
        {c: float for c in ("accuracy_change", "ci_low", "ci_high", "sqnr_db", "size_change_bytes")}
    )


# --- latency profile ------------------------------------------------------------------------------


def layer_profile(
    engine: Engine,
    bundle: ModelBundle,
    precisions: Iterable[Precision],
    settings: MeasureSettings | None = None,
    runs: int = PROFILE_RUNS,
) -> pd.DataFrame:
    """Kernel time per run (batch 1) of each layer at each precision, from one profiled model per
    precision (the uniform plan); rows: layer (plus OTHER), precision, us_per_run, share."""
    settings = sensitivity_settings(settings or engine.settings)
    layers = engine.layers(bundle)
    names = [x.name for x in layers]
    accepts = {x.name: x.accepts for x in layers}
    cache = ModelCache(engine.cache_dir, bundle.model_hash)
    wanted = [Precision.FP32, *(p for p in dict.fromkeys(precisions) if p is not Precision.FP32)]
    jobs = {p: engine.job(bundle, uniform_plan(layers, p), settings) for p in wanted}
    paths = {
        p: cache.folder / f"profile-{stable_hash([job.key, runs, settings.threads])[:24]}.json"
        for p, job in jobs.items()
    }
    missing = [p for p in wanted if not paths[p].is_file()]
    feeds = measure.make_feeds(bundle.eval_set.inputs, 1)
    # Each precision's model built and profiled at once, one worker each. A precision whose model
    # cannot be built or profiled has no rows (its layers' sensitivity probes say why).
    profiled = engine.run_tasks(
        [
            (
                profile_plan_task,
                (
                    bundle.model_bytes,
                    bundle.calibration,
                    bundle.data_hash,
                    jobs[p].plan.to_json(),
                    jobs[p].settings.to_json(),
                    str(engine.cache_dir),
                    feeds,
                    names,
                    runs,
                ),
            )
            for p in missing
        ],
        what="profiling each precision's model",
        skip_failed=True,
    )
    profiles = {p: json.loads(paths[p].read_text()) for p in wanted if p not in missing}
    for p, profile in zip(missing, profiled, strict=True):
        if profile is not None:
            atomic_write(paths[p], json.dumps(profile).encode())
            profiles[p] = profile
    rows = []
    for precision in (p for p in wanted if p in profiles):
        times = profiles[precision]["us_per_run"]
        total = sum(times.values())
        for name in [*names, OTHER]:
            # A layer the uniform plan left FP32 (it refuses this precision) is not this precision's.
            if name != OTHER and precision not in accepts[name]:
                continue
            us = float(times.get(name, 0.0))
            rows.append(
                {
                    "layer": name,
                    "precision": precision.value,
                    "us_per_run": us,
                    "share": us / total if total else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=["layer", "precision", "us_per_run", "share"])
