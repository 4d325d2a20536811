"""`quantdash`: inspect models, evaluate plans and list results from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.api import Engine, EngineError
from engine.cli_input import PLAN_FORMAT, UsageError, batch_sizes, check_threads, check_timeout, read_plan
from engine.datasets import ModelBundle, sample_names
from engine.measure import fidelity_figures
from engine.model_io import ModelError
from engine.presets import PRESET_DESCRIPTIONS, PRESETS, preset_plan
from engine.report_text import RESULT_HEADERS, comparison_rows, format_table, layer_rows, result_rows
from engine.store import ResultStore, default_home, default_store_path
from engine.types import CalibrationMethod, MeasureSettings, Plan, PlanError
from engine.user_models import NAME_RULE, parse_shapes, remove_model, user_cards

DATA_HELP_ONE_LINE = (
    "Data: .npz with one array per model input (named as the input) and optional 'labels'; a .zip of "
    "images with labels.csv (file,label); or a .csv with one column per feature and an optional 'label' "
    "column. Without labels only fidelity to FP32 is measured; without data, inputs are random."
)


def _measure_options(command: argparse.ArgumentParser) -> None:
    """How plans are measured and where the work runs: the same for every command that measures."""
    command.add_argument("--calibration", default="minmax", help="minmax, entropy or percentile")
    command.add_argument("--batch-sizes", default="1,32", help="latency batch sizes, comma-separated")
    command.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    command.add_argument("--timeout", type=float, default=600.0, help="seconds before a worker is stopped")
    command.add_argument("--inline", action="store_true", help="run in this process instead of a worker")
    command.add_argument("--json", action="store_true")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quantdash",
        description="Really quantize ONNX models per layer and measure size, latency and accuracy.",
    )
    p.add_argument(
        "--home", help="data folder (store, cache, artifacts); default $QUANTDASH_HOME or ~/.quantdash"
    )
    p.add_argument("--store", help="result store file; default <home>/results.sqlite or $QUANTDASH_STORE")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the bundled sample models and the models you added").add_argument(
        "--json", action="store_true"
    )

    add = sub.add_parser(
        "add-model",
        help="add your own ONNX model (and evaluation data); then use it by name in every command",
        description="Check an ONNX model (a .onnx file, or a .zip of the model and its external data) and "
        "its evaluation data in a worker process, and add it by name. " + DATA_HELP_ONE_LINE,
    )
    add.add_argument("model_file", help="model.onnx, or a .zip holding one .onnx and its external data")
    add.add_argument("--data", help="evaluation data: .npz, .zip of images with labels.csv, or .csv")
    add.add_argument("--name", help="name to use it by (default: from the file name)")
    add.add_argument(
        "--shape",
        action="append",
        metavar="NAME=DIMxDIM...",
        help="an input's size when no data is given, e.g. input=1x3x224x224 (repeatable)",
    )
    add.add_argument(
        "--entry",
        metavar="FILE.py:FUNCTION",
        help="with FILE.safetensors: your function that builds the torch module (exported with --shape)",
    )
    add.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before the checking worker is stopped"
    )
    add.add_argument(
        "--inline", action="store_true", help="check in this process instead of a worker (unsafe)"
    )
    add.add_argument("--json", action="store_true")

    rm = sub.add_parser("remove-model", help="remove a model you added (its stored results stay)")
    rm.add_argument("name")
    rm.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="show a model's layer table")
    ins.add_argument("model", help="a sample or added model's name, or a path to an .onnx file")
    ins.add_argument("--json", action="store_true")
    ins.add_argument("--inline", action="store_true", help="run in this process instead of a worker")

    ev = sub.add_parser("evaluate", help="quantize a model by a plan and measure it")
    ev.add_argument("model", help="a sample or added model's name, or a path to an .onnx file")
    how = ev.add_mutually_exclusive_group(required=True)
    how.add_argument("--plan", help=f"plan JSON file, e.g. {PLAN_FORMAT}")
    how.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    ev.add_argument("--force", action="store_true", help="re-measure even if the store has the result")
    _measure_options(ev)

    rep = sub.add_parser(
        "report",
        help="recommend a plan for a goal; write report.html, report.pdf, plot images and bundle.zip",
    )
    rep.add_argument("model", help="a sample or added model's name, or a path to an .onnx file")
    rep.add_argument(
        "--goal", required=True, help='in plain words, e.g. "smallest model within 1 point of FP32 accuracy"'
    )
    rep.add_argument("--out", required=True, help="folder to write the report and bundle into")
    rep.add_argument("--no-pdf", action="store_true", help="skip the PDF and images (they need Chromium)")
    _measure_options(rep)

    res = sub.add_parser("results", help="list stored results")
    res.add_argument(
        "--model",
        help="only this model: a name, or the path of an .onnx file (its results by its content, under the "
        "names they were measured under; a file no longer there: by its file name)",
    )
    res.add_argument("--all", action="store_true", help="include failed results")
    res.add_argument("--json", action="store_true")
    return p


def _settings(args: argparse.Namespace) -> MeasureSettings:
    sizes, threads = batch_sizes(str(args.batch_sizes)), check_threads(args.threads)
    try:
        calibration = CalibrationMethod.parse(args.calibration)
    except ValueError as e:
        raise UsageError(f"--calibration: {e}") from None
    return MeasureSettings(calibration=calibration, batch_sizes=sizes, threads=threads)


def _store_path(args: argparse.Namespace) -> Path:
    # main() has put --home into $QUANTDASH_HOME, so the store's own default covers the rest.
    return Path(args.store) if args.store else default_store_path()


def _store(args: argparse.Namespace) -> ResultStore:
    path = _store_path(args)
    expected = "expected a store quantdash wrote, or the path of a new one (--store)"
    try:
        return ResultStore(path)
    except sqlite3.DatabaseError as e:
        if type(e) is sqlite3.DatabaseError:  # SQLite's "file is not a database", not a locked or missing one
            raise UsageError(f"{path} is not a quantdash result store (SQLite): {e}; {expected}") from None
        raise UsageError(f"{path}: cannot open the result store ({e}); {expected}") from None
    except RuntimeError as e:  # another schema version
        raise UsageError(f"{e}; {expected}") from None


@contextmanager
def _engine(args: argparse.Namespace, inline: bool, timeout: float = 600.0) -> Iterator[Engine]:
    home = default_home()
    store = _store(args)
    pool = None
    if not inline:
        from engine.jobs import WorkerPool

        pool = WorkerPool.connect()
    try:
        yield Engine(store=store, pool=pool, home=home, timeout_s=timeout)
    finally:
        if pool is not None:
            pool.close()
        store.close()


def _progress(message: str) -> None:
    # Progress goes to stderr so that --json output on stdout stays parseable.
    print(message, file=sys.stderr, flush=True)


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_models(args: argparse.Namespace) -> int:
    from engine.datasets import load_sample

    cards = [load_sample(n).card for n in sample_names()]
    cards += [{**c, "added": True} for c in user_cards(default_home()).values()]
    if args.json:
        _dump(cards)
        return 0
    rows = [
        [
            c["name"],
            "added" if c.get("added") else "sample",
            c["task"],
            f"{c.get('params', 0):,}",
            # An added model's card has none: its FP32 result is measured by its first evaluation.
            json.dumps(c["fp32_metrics"])
            if c.get("fp32_metrics")
            else "measured on first evaluate (see results)",
        ]
        for c in cards
    ]
    print(format_table(["model", "kind", "task", "params", "FP32 metrics"], rows))
    return 0


def cmd_add_model(args: argparse.Namespace) -> int:
    if args.name == "":  # else taken as no --name, and a name derived from the file's is used
        raise UsageError(f"--name is empty; expected {NAME_RULE}")
    shapes = parse_shapes(args.shape)
    model_file = Path(args.model_file)
    with tempfile.TemporaryDirectory(prefix="quantdash-add-") as tmp:
        if model_file.suffix.lower() == ".safetensors":
            if not args.entry:
                raise UsageError(
                    f"{model_file.name}: safetensors weights need the code that builds the module: "
                    "--entry FILE.py:FUNCTION and --shape NAME=1x3x32x32 (the example input to export with)"
                )
            from engine.torch_import import export_safetensors

            _progress(f"building {args.entry} with {model_file.name} and exporting it to ONNX ...")
            exported = Path(tmp) / f"{model_file.stem}.onnx"
            exported.write_bytes(export_safetensors(model_file, args.entry, shapes))
            model_file, shapes = exported, {}  # the export fixed every dimension but the batch
        elif args.entry:
            raise UsageError(
                "--entry is for safetensors weights (FILE.safetensors); this is " + model_file.name
            )
        if shapes and args.data:
            raise UsageError(
                "--shape is for a model added without data; with --data the data's shapes are used"
            )
        with _engine(args, args.inline, args.timeout) as eng:
            where = "this process (--inline)" if args.inline else "a worker process"
            _progress(f"checking {model_file.name} in {where} ...")
            added = eng.add_model(
                model_file,
                Path(args.data) if args.data else None,
                name=args.name,
                shapes=shapes,
            )
    card = added.card
    if args.json:
        _dump({"name": added.name, "folder": str(added.folder), "card": card})
        return 0
    what = {
        "classification": f"accuracy on {card['eval_size']} labelled samples",
        "language_model": f"accuracy and perplexity on {card['eval_size']} labelled sequences",
    }.get(
        card["task"],
        f"fidelity to FP32 only ({fidelity_figures(card.get('scores_classes', True))})",
    )
    print(
        f"added {added.name!r}: {card['layers']} layers, {card['params']:,} weights, opset {card['opset']}; "
        f"measures {what}"
    )
    for note in added.notes:
        print(f"  - {note}")
    for op in card.get("fp32_only", []):
        print(f"  - stays FP32: {op['node']} ({op['op']}): {op['why']}")
    print(f"\nuse it by name, e.g. quantdash evaluate {added.name} --preset int8")
    return 0


def cmd_remove_model(args: argparse.Namespace) -> int:
    remove_model(args.name, default_home())
    if args.json:
        _dump({"removed": args.name, "results_kept_in": str(_store_path(args))})
    else:
        print(f"removed {args.name!r} (its stored results stay in the store)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    with _engine(args, args.inline) as eng:
        bundle = eng.model(args.model)
        layers = eng.layers(bundle)
    if args.json:
        from engine.evaluate import layers_to_json

        _dump({"model": bundle.name, "layers": layers_to_json(layers)})
        return 0
    print(f"{bundle.name}: {len(layers)} layers\n")
    headers, rows = layer_rows(layers)
    print(format_table(headers, rows))
    notes = sorted({f"  {p.value}: {why}" for layer in layers for p, why in layer.rejects.items()})
    if notes:
        print("\nwhy some layers refuse a precision:\n" + "\n".join(notes))
    return 0


def _plan_from_args(args: argparse.Namespace, eng: Engine, bundle: ModelBundle) -> Plan:
    if args.plan:
        return read_plan(args.plan)
    return preset_plan(args.preset, eng.layers(bundle))


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _engine(args, args.inline, args.timeout) as eng:
        bundle = eng.model(args.model)
        plan = _plan_from_args(args, eng, bundle)
        job = eng.job(bundle, plan, settings)
        if eng.cached(eng.job(bundle, Plan(), settings)) is None:
            _progress(f"measuring the FP32 baseline of {bundle.name} (once) ...")
        base = eng.baseline(bundle, settings)
        if args.force or eng.cached(job) is None:
            _progress(f"quantizing and measuring {job.summary} ...")
        else:
            _progress("served from the store (use --force to measure again)")
        result = eng.evaluate(bundle, plan, settings=settings, source="cli", force=args.force)
    if args.json:
        _dump({"result": result, "baseline": base})
    else:
        print(f"{bundle.name} · plan: {result['plan_summary']}\n")
        if result["status"] != "ok":
            print(f"evaluation {result['status']}: {result['error']}")
        elif base["status"] != "ok":
            print(f"the FP32 baseline could not be measured ({base['status']}: {base['error']}),")
            print("so there is nothing to compare with; this plan's own figures are in --json")
        else:
            print(format_table(["", "FP32", "this plan", "change"], comparison_rows(base, result)))
            env = result["environment"]
            print(
                f"\nmeasured on {env.get('cpu')}, onnxruntime {env.get('onnxruntime')}, "
                f"{env.get('threads')} thread(s); key {result['key'][:12]}"
            )
    return 0 if result["status"] == "ok" else 1


def cmd_report(args: argparse.Namespace) -> int:
    from engine.goal import GoalError, parse_goal
    from engine.report import build_report, check_reportable, ensure_candidates, with_batch_1

    try:
        goal = parse_goal(args.goal)
    except GoalError as e:
        raise UsageError(str(e)) from None
    settings = with_batch_1(_settings(args))
    with _engine(args, args.inline, args.timeout) as eng:
        bundle = eng.model(args.model)
        check_reportable(bundle)
        _progress(f"goal understood as: {goal.describe()}")
        _progress(
            f"measuring the FP32 baseline and the presets of {bundle.name} (stored ones are reused) ..."
        )
        ensure_candidates(eng, bundle, settings)
        files = build_report(
            eng, bundle, goal, args.out, settings=settings, pdf=not args.no_pdf, on_step=_progress
        )
    rec = files.recommendation
    written = {
        "html": str(files.html),
        "pdf": str(files.pdf) if files.pdf else None,
        "bundle": str(files.bundle) if files.bundle else None,
        "images": [str(p) for p in files.images],
    }
    if args.json:
        _dump(
            {
                "goal": goal.describe(),
                "recommended": rec.chosen_key,
                "headline": rec.headline,
                "statement": rec.statement,
                "caveats": list(rec.caveats),
                "files": written,
                "render_error": files.render_error,
            }
        )
    else:
        print(f"{rec.headline}\n{rec.statement}\n\ncaveats:")
        print("\n".join(f"  - {c}" for c in rec.caveats))
        print("\nwrote: " + ", ".join(str(v) for k, v in written.items() if v and k != "images"))
        if files.images:
            print(f"       {len(files.images)} plot images in {files.images[0].parent}")
        if files.render_error:
            print(f"no PDF: {files.render_error}", file=sys.stderr)
    if rec.chosen is None:
        return 1
    return 3 if files.render_error else 0


RESULT_COLUMNS = [
    "key", "model_name", "plan_summary", "status", "size_bytes", "latency_ms_b1", "accuracy",
    "accuracy_delta", "accuracy_delta_ci_low", "accuracy_delta_ci_high", "sqnr_db", "created_at",
]  # fmt: skip


def cmd_results(args: argparse.Namespace) -> int:
    status = None if args.all else "ok"
    if args.model and args.model.endswith(".onnx") and Path(args.model).is_file():
        # By the file's content, as its results are keyed: they are stored under its file name, which
        # two different files in two folders may share.
        with _engine(args, inline=True) as eng:
            bundle = eng.model(args.model)
            frame = eng.store.to_frame(network=(bundle.model_hash, bundle.data_hash), status=status)
    else:
        with _store(args) as store:
            # A file no longer on disk: its results by the name they were stored under (its file name).
            model = Path(args.model).name if args.model and args.model.endswith(".onnx") else args.model
            frame = store.to_frame(model_name=model, status=status)
    cols = RESULT_COLUMNS
    if args.json:
        _dump(json.loads(frame[cols + ["plan", "error"]].to_json(orient="records", date_format="iso")))
        return 0
    if frame.empty:
        print("no results yet: try `quantdash evaluate digits_cnn --preset int8`")
        return 0
    print(format_table(RESULT_HEADERS, result_rows(frame[cols].to_dict("records"))))
    return 0


COMMANDS = {
    "models": cmd_models,
    "add-model": cmd_add_model,
    "remove-model": cmd_remove_model,
    "inspect": cmd_inspect,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "results": cmd_results,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.home:
        os.environ["QUANTDASH_HOME"] = args.home
    try:
        if "timeout" in args:
            check_timeout(args.timeout)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        # Each result is written to the store as soon as it is measured, so finished ones are not lost.
        where = _store_path(args)
        print(
            f"quantdash {args.command}: interrupted: results measured so far are kept in {where}",
            file=sys.stderr,
        )
        return 130
    except (UsageError, ModelError, PlanError, EngineError) as e:
        print(f"quantdash {args.command}: {e}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:
        # A store path that cannot be opened, a folder without permission, a cluster that will not start.
        print(f"quantdash {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PRESET_DESCRIPTIONS", "main", "read_plan"]
