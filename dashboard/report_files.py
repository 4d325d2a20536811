"""Reports built on the Report page, kept on disk where the page finds them again.

Each report is written to reports/<model>-<UTC time>/ by a background job, and ends with a
built.json saying what it holds. The page shows the newest one of the model from those files, not
from the session: a built report survives leaving the page while it builds, a reload and a restart.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from engine.evaluate import atomic_write

RECORD = "built.json"


def fresh_dir(root: Path, name: str) -> Path:
    """A new folder root/<name>-<UTC time> (suffixed -2, -3... if that second is taken)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        out = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            out.mkdir(parents=True)
        except FileExistsError:
            continue
        return out
    raise AssertionError("unreachable")


def zip_images(images: Sequence[Path], target: Path) -> Path:
    """images.zip of the plot images (PNG and SVG), written whole or not at all."""
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for image in images:
            z.write(image, image.name)
    partial.replace(target)
    return target


def write_record(out_dir: Path, record: dict[str, Any]) -> None:
    """built.json, written last and whole: a folder without it is a build that did not finish."""
    stamped = {**record, "built_at_iso": datetime.now(UTC).isoformat()}
    atomic_write(out_dir / RECORD, json.dumps(stamped, indent=2).encode())


def latest(root: Path, model: str, model_id: str) -> dict[str, Any] | None:
    """The newest finished report of this model (by identity: a model added under a removed one's
    name does not get its reports) whose HTML is still on disk; None if there is none."""
    found = []
    for path in root.glob("*/" + RECORD):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged record is a report the page cannot offer, not a failure of the page
        if not isinstance(record, dict) or record.get("model") != model or record.get("model_id") != model_id:
            continue
        if Path(str(record.get("html"))).is_file():
            found.append(record)
    return max(found, key=lambda r: str(r.get("built_at_iso", "")), default=None)


def measured_since(results: pd.DataFrame, record: Mapping[str, Any]) -> int:
    """How many of these results (store.to_frame rows: the plans a report of the model considers) were
    measured after the report was built: what it does not show."""
    built = str(record.get("built_at_iso") or "")
    if results.empty or not built:
        return 0
    created = pd.to_datetime(results["created_at"], utc=True, format="ISO8601")
    return int((created > pd.Timestamp(built)).sum())
