"""Checks that keep an uploaded file from running code, escaping its folder or exhausting the machine.

Every file a user gives (an ONNX model, a .zip of a model and its external data, evaluation data)
passes through here before anything parses it. Nothing is ever unpickled: pickle-based formats are
refused by their name. Archives are checked member by member before a single byte is written.
The dashboard, the CLI and the workers all use this module, so it must never import streamlit.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import onnx

from engine.model_io import ModelError


class UnsafeUpload(ModelError):
    """An upload refused because using it could run code, escape its folder or exhaust the machine."""


MODEL_SUFFIXES = (".onnx", ".zip")
DATA_SUFFIXES = (".npz", ".zip", ".csv")
# Caps per file type, in bytes; looked up at call time, so a test may shrink them.
MAX_BYTES = {".onnx": 512 * 2**20, ".zip": 512 * 2**20, ".npz": 256 * 2**20, ".csv": 64 * 2**20}
MAX_ZIP_MEMBERS = 1000
MAX_UNZIPPED_BYTES = 2 * 2**30
MAX_COMPRESSION_RATIO = 100
# Small members may compress far better than any ratio (a file of zeros) and cannot hurt, so the
# ratio is only checked above this size.
RATIO_CHECK_MIN_BYTES = 2**20
# Formats read by unpickling, which runs whatever code the file's author put in it.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".bin")

_EXPECTED = {
    "model": "an ONNX model (.onnx, or a .zip of the model and its external data)",
    "data": "evaluation data (.npz arrays, a .zip of images with a labels.csv, or a .csv)",
}
_CLI_HINT = "quantdash add-model weights.safetensors --entry FILE.py:FUNCTION --shape NAME=1x3x32x32"
_DRIVE = re.compile(r"^[A-Za-z]:")
# zipfile decodes these two everywhere; bzip2 and lzma add decompressors for no user benefit.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# A central-directory entry is 46 bytes plus name, extra field and comment. zipfile reads the whole
# directory into memory before we can count members, so its size is capped first (see _check_directory).
_MAX_DIRECTORY_ENTRY_BYTES = 4096
_CHUNK = 2**20


# An absolute path inside an error message (Pillow, zipfile and the OS name the files they opened):
# the server's folders are no business of the user's, so only the last part is kept.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/]+[\\/])+([^\s'\"\\/]*)")


def error_words(e: BaseException) -> str:
    """An exception as 'Type: message' for a user: an OSError by its reason, any path cut to its file name."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    text = _ABSOLUTE_PATH.sub(
        lambda m: m.group(1) or "(a folder)", text.strip().splitlines()[0] if text.strip() else ""
    )
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def check_upload_file(path: Path, kind: str, original_name: str | None = None) -> str:
    """Check an uploaded file by name, existence and size; return its lower-case suffix.

    `kind` is "model" or "data". `original_name` is the user's file name (uploads are stored under
    generated names): messages show it, and its suffix is the one checked. Raises UnsafeUpload for a
    pickle-based format or a file over its cap, ModelError for other refusals.
    """
    if kind not in _EXPECTED:
        raise ValueError(f"kind must be 'model' or 'data', not {kind!r}")
    path = Path(path)
    name = original_name or path.name
    suffix = Path(name).suffix.lower()
    accepted = MODEL_SUFFIXES if kind == "model" else DATA_SUFFIXES
    expected = _EXPECTED[kind]
    if suffix in PICKLE_SUFFIXES:
        hint = (
            "A PyTorch model is accepted as ONNX (.onnx, e.g. from torch.onnx.export), or on the command "
            f"line as safetensors weights plus the code that builds the network: {_CLI_HINT}"
            if kind == "model"
            else f"Expected {expected}."
        )
        if suffix == ".bin" and kind == "model":
            hint += (
                " If this .bin is an ONNX model's external data, upload a .zip holding the .onnx file "
                "and its data files."
            )
        raise UnsafeUpload(
            f"{name}: {suffix} files are pickle-based and are never unpickled here, because unpickling "
            f"can run arbitrary code. {hint}"
        )
    if suffix == ".safetensors" and kind == "model":
        raise ModelError(
            f"{name}: a .safetensors file holds weights only, not the network that uses them, so it "
            f"cannot be uploaded here. Upload {expected}, or add it on the command line with the code "
            f"that builds the network: {_CLI_HINT}"
        )
    if suffix not in accepted:
        found = f"'{suffix}'" if suffix else "no extension"
        raise ModelError(f"{name}: found {found}; expected {expected}: one of {', '.join(accepted)}")
    if not path.is_file():
        raise ModelError(f"{name}: file not found; expected {expected}")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{name} is empty (0 bytes); expected {expected}")
    cap = MAX_BYTES[suffix]
    if size > cap:
        raise UnsafeUpload(
            f"{name} is {_mb(size)}, over the {cap / 2**20:g} MB cap for {suffix} files; "
            f"expected a smaller file"
        )
    return suffix


# ---------------------------------------------------------------------------------------------- zip


def safe_extract_zip(
    zip_path: Path,
    dest: Path,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_total_bytes: int = MAX_UNZIPPED_BYTES,
    max_ratio: float = MAX_COMPRESSION_RATIO,
) -> list[Path]:
    """Check every member of a zip archive, then extract its files into `dest`; return their paths.

    Nothing is written until every member passed. Refusals raise UnsafeUpload naming the member and
    the rule, and leave nothing extracted in `dest`.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    _check_directory(zip_path, max_members)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, ValueError, struct.error, EOFError) as e:
        # ValueError covers a member name flagged UTF-8 that is not.
        raise UnsafeUpload(f"not a readable zip archive ({error_words(e)}); expected a .zip file") from None
    with archive:
        infos = archive.infolist()
        _check_members(infos, max_members, max_total_bytes, max_ratio)
        return _extract(archive, infos, dest, max_total_bytes)


def _check_directory(zip_path: Path, max_members: int) -> None:
    """Refuse an archive whose end record declares too many members or too large a directory.

    Done by hand because zipfile builds an object per member (the whole directory in memory) before
    it lets us count them: a 512 MB upload could declare ten million members.
    """
    with zip_path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - 22 - 2**16)  # the end record plus the longest possible comment
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return  # no end record: zipfile will say it is not a zip
        entries, directory_bytes = struct.unpack_from("<HL", tail, at + 10)
        locator = at - 20
        if (entries == 0xFFFF or directory_bytes == 0xFFFFFFFF) and tail[locator : locator + 4] == (
            b"PK\x06\x07"
        ):
            # Zip64: the real counts are in a larger end record the locator points to.
            (record_at,) = struct.unpack_from("<Q", tail, locator + 8)
            f.seek(record_at)
            record = f.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                entries, directory_bytes = struct.unpack_from("<QQ", record, 32)
    if entries > max_members:
        raise UnsafeUpload(f"the zip archive holds {entries} members; expected at most {max_members}")
    if directory_bytes > max_members * _MAX_DIRECTORY_ENTRY_BYTES:
        raise UnsafeUpload(
            f"the zip archive's table of contents is {_mb(directory_bytes)}, too large for at most "
            f"{max_members} members with names of ordinary length"
        )


def _member_parts(name: str) -> tuple[str, ...]:
    """The member's path components, or UnsafeUpload if extracting it could land outside `dest`."""
    where = f"zip member {name!r}"
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeUpload(f"{where} has an absolute path; expected paths relative to the archive's top")
    if "\\" in name:
        # A backslash is a folder separator on Windows, where it could hide a '..'.
        raise UnsafeUpload(f"{where} contains a backslash; expected '/' as the folder separator")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeUpload(
            f"{where} reaches outside the folder it is unpacked into ('..' in its path, a zip slip); "
            "expected paths inside the archive"
        )
    if not parts:
        raise UnsafeUpload(f"{where} has no name; expected a file or folder name")
    if any(len(p.encode()) > 255 for p in parts):
        raise UnsafeUpload(f"{where} has a name longer than 255 bytes; expected ordinary file names")
    return parts


def _check_members(
    infos: list[zipfile.ZipInfo], max_members: int, max_total_bytes: int, max_ratio: float
) -> None:
    if len(infos) > max_members:  # the end record may have understated the count
        raise UnsafeUpload(f"the zip archive holds {len(infos)} members; expected at most {max_members}")
    seen: set[tuple[str, ...]] = set()
    files: set[tuple[str, ...]] = set()
    total = 0
    for info in infos:
        name, where = info.filename, f"zip member {info.filename!r}"
        parts = _member_parts(name)
        if info.flag_bits & 0x1:
            raise UnsafeUpload(f"{where} is encrypted; expected an archive without a password")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeUpload(
                f"{where} is a symbolic link, which could point anywhere on this machine; "
                "expected plain files and folders only"
            )
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeUpload(f"{where} is a device, pipe or socket; expected plain files and folders only")
        if info.compress_type not in _ZIP_METHODS:
            raise UnsafeUpload(
                f"{where} uses compression method {info.compress_type}; expected stored or deflated "
                "(what zip tools write by default)"
            )
        if parts in seen:
            raise UnsafeUpload(
                f"{where} appears twice; expected each name once (which copy counts is unclear)"
            )
        seen.add(parts)
        if not info.is_dir():
            files.add(parts)
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
            raise UnsafeUpload(
                f"{where} looks like a zip bomb: it unpacks to {_mb(info.file_size)} from "
                f"{info.compress_size:,} bytes, a compression ratio of {ratio:.0f}; "
                f"expected at most {max_ratio:g}"
            )
        total += info.file_size
    if total > max_total_bytes:
        raise UnsafeUpload(
            f"the zip archive unpacks to {_mb(total)}, over the {_mb(max_total_bytes)} cap; "
            "expected a smaller archive"
        )
    for parts in files:
        for i in range(1, len(parts)):
            if parts[:i] in files:
                raise UnsafeUpload(
                    f"zip member {'/'.join(parts[:i])!r} is both a file and a folder; expected distinct names"
                )


def _extract(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path, max_total_bytes: int
) -> list[Path]:
    created_dest = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []  # every file and folder we create, in order, to undo on a refusal
    extracted: list[Path] = []
    total, name = 0, ""
    try:
        for info in infos:
            name, parts = info.filename, _member_parts(info.filename)
            folder_parts = parts if info.is_dir() else parts[:-1]
            folder = dest
            for part in folder_parts:
                folder = folder / part
                if folder.is_symlink():  # only possible if dest held one before: never write through it
                    raise UnsafeUpload(f"zip member {name!r} would be written through the link {folder}")
                if not folder.is_dir():
                    folder.mkdir()
                    made.append(folder)
            if info.is_dir():
                continue
            target = dest.joinpath(*parts)
            # O_EXCL: never overwrite, and never follow a link already sitting at the target.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            made.append(target)
            total = _copy_member(archive, info, fd, total, max_total_bytes)
            extracted.append(target)
    except BaseException as e:
        _undo(made, dest if created_dest else None)
        if isinstance(e, (zipfile.BadZipFile, zlib.error, EOFError)):
            raise UnsafeUpload(
                f"not a readable zip archive: member {name!r} is damaged ({error_words(e)})"
            ) from None
        if isinstance(e, OSError):
            raise ModelError(f"could not unpack zip member {name!r} ({error_words(e)})") from None
        raise
    return extracted


def _undo(made: list[Path], dest: Path | None) -> None:
    """Remove what an extraction created (newest first), and `dest` itself if it created that too."""
    for p in [*reversed(made), *([dest] if dest else [])]:
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, fd: int, total: int, max_total: int) -> int:
    """Stream one member into `fd`, counting real bytes; return the running total.

    Headers can lie. zipfile already stops at the declared size (and its CRC check catches a member
    cut short), but the caps are counted here too so they never depend on that.
    """
    written = 0
    with os.fdopen(fd, "wb") as out, archive.open(info) as src:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            total += len(chunk)
            if written > info.file_size:
                raise UnsafeUpload(
                    f"zip member {info.filename!r} unpacks to more than the {info.file_size:,} bytes its "
                    "header declares; expected an archive whose headers are true"
                )
            if total > max_total:
                raise UnsafeUpload(
                    f"the zip archive unpacks to more than the {_mb(max_total)} cap (while unpacking "
                    f"{info.filename!r}); expected a smaller archive"
                )
            out.write(chunk)
    return total


# ------------------------------------------------------------------------------------ external data


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Check where every external-data tensor of `model` would be read from, before anything reads it.

    `model` was loaded with load_external_data=False. Covers graph initializers, sparse initializers and
    tensors in node attributes (Constant's `value`...), in subgraphs (If, Loop, Scan) and functions.
    Each location must be a relative path to a real file inside `base_dir`, reached through no
    symbolic link, and the tensor's offset and length must lie within that file.
    """
    base = Path(base_dir).resolve()
    for label, tensor in _external_tensors(model):
        _check_location(tensor, label, base)


def _external_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    def in_graph(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
        for t in graph.initializer:
            yield t.name, t
        for s in graph.sparse_initializer:
            yield s.values.name, s.values
            yield s.indices.name or f"{s.values.name} (indices)", s.indices
        yield from in_nodes(graph.node)

    def in_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterator[tuple[str, onnx.TensorProto]]:
        for node in nodes:
            for attr in node.attribute:
                where = f"attribute {attr.name!r} of node {node.name or node.op_type!r}"
                tensors = [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(
                    attr.sparse_tensors
                )
                tensors += [t for s in sparse for t in (s.values, s.indices)]
                for t in tensors:
                    yield t.name or f"the tensor in {where}", t
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from in_graph(sub)

    found = list(in_graph(model.graph))
    for function in model.functions:
        found += in_nodes(function.node)
    yield from ((label, t) for label, t in found if t.data_location == onnx.TensorProto.EXTERNAL)


def _byte_count(entries: dict[str, str], key: str, label: str) -> int | None:
    if key not in entries:
        return None
    value = entries[key]
    if not (value.isascii() and value.isdigit()):
        raise UnsafeUpload(
            f"tensor {label!r}: external data {key} is {value!r}; expected a whole number of bytes"
        )
    return int(value)


def _check_location(tensor: onnx.TensorProto, label: str, base: Path) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    where = f"tensor {label!r}: external data location {location!r}"
    if not location:
        raise UnsafeUpload(
            f"tensor {label!r} is stored as external data but names no file; expected a location"
        )
    if location.startswith("/") or _DRIVE.match(location):
        raise UnsafeUpload(f"{where} is an absolute path; expected a path relative to the model's folder")
    if "\\" in location or "\0" in location:
        raise UnsafeUpload(f"{where} contains a backslash or NUL; expected '/' as the folder separator")
    parts = PurePosixPath(location).parts
    if ".." in parts:
        raise UnsafeUpload(
            f"{where} reaches outside the model's folder ('..' in its path); expected a file beside the model"
        )
    path = base
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise UnsafeUpload(
                f"{where} goes through the symbolic link {part!r}, which could point anywhere on this "
                "machine; expected plain files beside the model"
            )
    if not path.resolve().is_relative_to(base):  # cannot happen after the checks above; kept as a backstop
        raise UnsafeUpload(f"{where} resolves outside the model's folder; expected a file beside the model")
    if not path.is_file():
        raise ModelError(
            f"{where}: the file is missing; expected it beside the model (upload a .zip holding the .onnx "
            "file and its data files)"
        )
    size = path.stat().st_size
    offset = _byte_count(entries, "offset", label) or 0
    length = _byte_count(entries, "length", label)
    end = size if length is None else offset + length
    if offset > size or end > size:
        shown = "to its end" if length is None else f"{length:,} bytes"
        raise UnsafeUpload(
            f"external data out of range: tensor {label!r} reads {shown} at offset {offset:,} of "
            f"{location!r}, which is {size:,} bytes; expected the data to lie within the file"
        )
