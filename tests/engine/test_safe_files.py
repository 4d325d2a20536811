"""engine.safe_files against real hostile files built in tmp_path (no mocks)."""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import safe_files
from engine.model_io import ModelError
from engine.safe_files import UnsafeUpload, check_external_data, check_upload_file, safe_extract_zip

# ------------------------------------------------------------------------------------ helpers


def _matmul_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(folder: Path) -> Path:
    """The MatMul model saved as model.onnx + weights.bin (16384 bytes) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        _matmul_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def _load_no_data(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def _set_entry(tensor: onnx.TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    tensor.external_data.add(key=key, value=value)


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def _refused_zip(tmp_path: Path, archive: Path, match: str, **caps: int) -> Path:
    """safe_extract_zip refuses `archive` with `match`; nothing is left in dest or anywhere in tmp_path."""
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(UnsafeUpload, match=match):
        safe_extract_zip(archive, dest, **caps)
    assert not dest.exists() or not any(dest.iterdir())
    assert _files_under(tmp_path) == [archive]  # nothing escaped: the archive is the only file
    return dest


# ------------------------------------------------------------------------------ check_upload_file


def test_good_files_return_their_lower_case_suffix(tmp_path: Path) -> None:
    stored = tmp_path / "upload-1234"  # uploads are stored under generated names
    stored.write_bytes(b"x")
    assert check_upload_file(stored, "model", "MyNet.ONNX") == ".onnx"
    assert check_upload_file(stored, "model", "bundle.zip") == ".zip"
    assert check_upload_file(stored, "data", "eval.NPZ") == ".npz"
    assert check_upload_file(stored, "data", "rows.csv") == ".csv"


def test_empty_file_is_refused_naming_the_user_file(tmp_path: Path) -> None:
    stored = tmp_path / "upload-1234.onnx"
    stored.write_bytes(b"")
    with pytest.raises(ModelError) as e:
        check_upload_file(stored, "model", "net.onnx")
    assert str(e.value) == (
        "net.onnx is empty (0 bytes); expected an ONNX model (.onnx, or a .zip of the model and its "
        "external data)"
    )
    with pytest.raises(ModelError, match=r"data.csv is empty \(0 bytes\); expected evaluation data \(.npz"):
        check_upload_file(stored, "data", "data.csv")


def test_wrong_extension_names_it_and_lists_the_accepted_ones(tmp_path: Path) -> None:
    f = tmp_path / "net.txt"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"net.txt: found '.txt'; .* one of .onnx, .zip$"):
        check_upload_file(f, "model")
    with pytest.raises(ModelError, match=r"found '.pb'; .* one of .onnx, .zip$"):
        check_upload_file(f, "model", "graph.pb")
    with pytest.raises(ModelError, match=r"found no extension; .* one of .npz, .zip, .csv$"):
        check_upload_file(f, "data", "labels")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".bin"])
def test_pickle_formats_are_never_opened(tmp_path: Path, suffix: str) -> None:
    f = tmp_path / f"upload{suffix}"
    # A real pickle that would run code if loaded: it must not matter, it is refused by name.
    f.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(UnsafeUpload) as e:
        check_upload_file(f, "model", f"resnet{suffix}")
    msg = str(e.value)
    assert f"resnet{suffix}: {suffix} files are pickle-based and are never unpickled" in msg
    assert "unpickling can run arbitrary code" in msg
    assert "safetensors" in msg
    assert "quantdash add-model weights.safetensors --entry FILE.py:FUNCTION --shape NAME=1x3x32x32" in msg
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(UnsafeUpload, match="never unpickled.*Expected evaluation data"):
        check_upload_file(f, "data", f"eval{suffix}")


def test_bin_refusal_also_points_to_zipping_external_data(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(UnsafeUpload, match=r"If this .bin is an ONNX model's external data, upload a .zip"):
        check_upload_file(f, "model")


def test_safetensors_in_the_dashboard_points_to_the_cli(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(
        ModelError, match=r"holds weights only.*quantdash add-model weights.safetensors --entry"
    ):
        check_upload_file(f, "model")


def test_file_over_its_cap_is_refused_with_size_and_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(safe_files.MAX_BYTES, ".onnx", 2**20)
    f = tmp_path / "big.onnx"
    f.write_bytes(b"\0" * (3 * 2**19))
    with pytest.raises(UnsafeUpload, match=r"big.onnx is 1.5 MB, over the 1 MB cap for .onnx files"):
        check_upload_file(f, "model")
    f.write_bytes(b"\0" * 2**20)  # exactly at the cap is fine
    assert check_upload_file(f, "model") == ".onnx"


def test_missing_file_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="file not found"):
        check_upload_file(tmp_path / "gone.onnx", "model")
    with pytest.raises(ValueError, match="kind must be 'model' or 'data'"):
        check_upload_file(tmp_path / "gone.onnx", "weights")


# -------------------------------------------------------------------------------- safe_extract_zip


def test_normal_model_zip_extracts_and_its_external_data_checks_out(tmp_path: Path) -> None:
    model_path = _save_external(tmp_path / "src")
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("net/", b"")  # an explicit folder entry
        zf.write(model_path, "net/model.onnx")
        zf.write(model_path.parent / "weights.bin", "net/weights.bin")
    dest = tmp_path / "out"
    files = safe_extract_zip(archive, dest)
    assert files == [dest / "net" / "model.onnx", dest / "net" / "weights.bin"]
    assert (dest / "net" / "weights.bin").read_bytes() == (model_path.parent / "weights.bin").read_bytes()
    model = _load_no_data(dest / "net" / "model.onnx")
    check_external_data(model, dest / "net")
    onnx.load_external_data_for_model(model, str(dest / "net"))
    np.testing.assert_array_equal(
        numpy_helper.to_array(model.graph.initializer[0]),
        np.arange(64 * 64, dtype=np.float32).reshape(64, 64),
    )


def test_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "fake.zip"
    archive.write_bytes(b"this is not a zip archive at all")
    _refused_zip(tmp_path, archive, "not a readable zip archive")


def test_zip_slip_member_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "slip.zip", {"ok.txt": b"fine", "../../evil.txt": b"pwned"})
    dest = _refused_zip(tmp_path, archive, r"zip member '../../evil.txt' reaches outside .*zip slip")
    assert not (dest.parent.parent / "evil.txt").exists()


def test_absolute_member_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "abs.txt"  # an absolute path we can check afterwards
    archive = _zip(tmp_path / "abs.zip", {str(target): b"pwned"})
    _refused_zip(tmp_path, archive, "has an absolute path")
    assert not target.exists()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("C:/Windows/evil.txt", "has an absolute path"),
        ("..\\..\\evil.txt", "contains a backslash"),
        ("a/./../../evil.txt", "reaches outside"),
    ],
)
def test_windows_and_disguised_paths_are_refused(tmp_path: Path, name: str, match: str) -> None:
    archive = _zip(tmp_path / "w.zip", {name: b"pwned"})
    _refused_zip(tmp_path, archive, match)


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    link = zipfile.ZipInfo("passwd")
    link.create_system = 3  # unix, so the mode bits count
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(link, "/etc/passwd")
    dest = _refused_zip(tmp_path, archive, "zip member 'passwd' is a symbolic link")
    assert not (dest / "passwd").is_symlink()


def test_encrypted_member_is_refused(tmp_path: Path) -> None:
    # zipfile cannot write encrypted archives: set the "encrypted" flag bit in both headers instead.
    archive = _zip(tmp_path / "enc.zip", {"secret.txt": b"hidden"})
    data = bytearray(archive.read_bytes())
    data[6] |= 0x1  # local header, general purpose flags
    data[data.rfind(b"PK\x01\x02") + 8] |= 0x1  # central directory header
    archive.write_bytes(bytes(data))
    _refused_zip(tmp_path, archive, "zip member 'secret.txt' is encrypted")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name"; that is the point
        _zip(archive, {"model.onnx": b"one"})
        with zipfile.ZipFile(archive, "a") as zf:
            zf.writestr("model.onnx", b"two")
    _refused_zip(tmp_path, archive, "zip member 'model.onnx' appears twice")


def test_a_name_that_is_both_file_and_folder_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "clash.zip", {"a": b"file", "a/b": b"inside"})
    _refused_zip(tmp_path, archive, "zip member 'a' is both a file and a folder")


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(1001)}, zipfile.ZIP_STORED)
    _refused_zip(tmp_path, archive, "holds 1001 members; expected at most 1000")
    _refused_zip(tmp_path, archive, "holds 1001 members; expected at most 10", max_members=10)


def test_huge_table_of_contents_is_refused_before_zipfile_reads_it(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "toc.zip", {"d/" * 5000 + "f": b"x"})  # one 10 kB member name
    _refused_zip(tmp_path, archive, "table of contents is .* too large for at most 2 members", max_members=2)


def test_declared_total_over_the_cap_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "big.zip", {"a.bin": b"a" * 600, "b.bin": b"b" * 600}, zipfile.ZIP_STORED)
    _refused_zip(tmp_path, archive, "unpacks to .* over the .* cap", max_total_bytes=1000)


def test_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"ok.txt": b"fine", "zeros.bin": bytes(50 * 2**20)})
    assert archive.stat().st_size < 100_000  # about 1000:1
    _refused_zip(tmp_path, archive, r"zip member 'zeros.bin' looks like a zip bomb: it unpacks to 50.0 MB")


def test_small_highly_compressible_members_are_fine(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "zeros.zip", {"zeros.bin": bytes(2**19)})  # 512 kB: under the ratio floor
    assert safe_extract_zip(archive, tmp_path / "out") == [tmp_path / "out" / "zeros.bin"]


def _lying_zip(path: Path, payload: bytes, declared: int, *, fix_crc: bool) -> Path:
    """A zip whose headers (local and central) declare `declared` bytes for a larger member."""
    _zip(path, {"big.txt": payload})
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, 22, declared)  # local header: uncompressed size
    struct.pack_into("<L", data, central + 24, declared)  # central directory: uncompressed size
    if fix_crc:  # make the CRC agree with the declared prefix, so zipfile's CRC check passes
        crc = zlib.crc32(payload[:declared])
        struct.pack_into("<L", data, 14, crc)
        struct.pack_into("<L", data, central + 16, crc)
    path.write_bytes(bytes(data))
    return path


def test_member_larger_than_its_header_declares_is_refused(tmp_path: Path) -> None:
    # Declaring 10 bytes dodges the ratio and total checks; the real 2 MB must still not land.
    archive = _lying_zip(tmp_path / "lie.zip", b"A" * 2 * 2**20, 10, fix_crc=False)
    _refused_zip(tmp_path, archive, r"not a readable zip archive: member 'big.txt' is damaged")


def test_a_lying_header_yields_no_more_than_it_declares(tmp_path: Path) -> None:
    # With a matching CRC the lie is undetectable from outside zipfile, which stops reading at the
    # declared size: the extracted file holds only the declared bytes, so the caps still hold. (Our own
    # "wrote more than declared" check is a backstop that real files cannot reach; not tested, no mocks.)
    archive = _lying_zip(tmp_path / "lie.zip", b"A" * 2 * 2**20, 10, fix_crc=True)
    (out,) = safe_extract_zip(archive, tmp_path / "out")
    assert out.read_bytes() == b"A" * 10


def test_refusal_during_extraction_removes_what_was_written(tmp_path: Path) -> None:
    # The first member is good and gets written; the second is damaged (bad CRC) and only found out
    # while unpacking. Nothing may remain, in a dest that already existed with a file of its own.
    archive = tmp_path / "half.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("first/good.txt", b"good")
        zf.writestr("second/bad.txt", b"payload")
    data = archive.read_bytes()
    at = data.index(b"payload")
    archive.write_bytes(data[:at] + b"PAYLOAD" + data[at + 7 :])  # same size, wrong CRC
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"mine")
    with pytest.raises(UnsafeUpload, match=r"member 'second/bad.txt' is damaged .*CRC"):
        safe_extract_zip(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_existing_link_in_dest_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    archive = _zip(tmp_path / "t.zip", {"sub/x.txt": b"pwned"})
    with pytest.raises(UnsafeUpload, match="written through the link"):
        safe_extract_zip(archive, dest)
    assert not any(outside.iterdir())


# ---------------------------------------------------------------------------- check_external_data


def test_external_data_beside_the_model_passes(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    model = _load_no_data(path)
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL
    check_external_data(model, path.parent)


@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("../../etc/passwd", r"tensor 'W': external data location '../../etc/passwd' reaches outside"),
        ("/etc/passwd", r"tensor 'W': external data location '/etc/passwd' is an absolute path"),
        ("C:/weights.bin", "is an absolute path"),
        ("sub\\..\\..\\x.bin", "contains a backslash"),
        ("", "names no file"),
    ],
)
def test_external_location_escaping_the_folder_is_refused(tmp_path: Path, location: str, match: str) -> None:
    path = _save_external(tmp_path / "m")
    model = _load_no_data(path)
    _set_entry(model.graph.initializer[0], "location", location)
    with pytest.raises(UnsafeUpload, match=match):
        check_external_data(model, path.parent)


def test_external_data_through_a_symlink_is_refused(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(os.urandom(2 * 64 * 64 * 4))
    (path.parent / "link.bin").symlink_to(outside / "secret.bin")  # a file link pointing outside
    (path.parent / "sub").symlink_to(outside)  # a folder link pointing outside
    (path.parent / "inner.bin").symlink_to(path.parent / "weights.bin")  # even one pointing inside
    model = _load_no_data(path)
    for location, link in [("link.bin", "link.bin"), ("sub/secret.bin", "sub"), ("inner.bin", "inner.bin")]:
        _set_entry(model.graph.initializer[0], "location", location)
        with pytest.raises(
            UnsafeUpload, match=f"location '{location}' goes through the symbolic link '{link}'"
        ):
            check_external_data(model, path.parent)


def test_missing_external_file_is_refused(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    model = _load_no_data(path)
    _set_entry(model.graph.initializer[0], "location", "other.bin")
    with pytest.raises(ModelError, match="location 'other.bin': the file is missing"):
        check_external_data(model, path.parent)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"length": "16385"}, "reads 16,385 bytes at offset 0 of 'weights.bin', which is 16,384 bytes"),
        ({"offset": "16000", "length": "1000"}, "reads 1,000 bytes at offset 16,000"),
        ({"offset": "20000", "length": "0"}, "reads 0 bytes at offset 20,000"),
    ],
)
def test_external_data_out_of_range_is_refused(tmp_path: Path, entries: dict[str, str], match: str) -> None:
    path = _save_external(tmp_path / "m")
    assert (path.parent / "weights.bin").stat().st_size == 16384
    model = _load_no_data(path)
    for key, value in entries.items():
        _set_entry(model.graph.initializer[0], key, value)
    with pytest.raises(UnsafeUpload, match=f"external data out of range: tensor 'W' {match}"):
        check_external_data(model, path.parent)


def test_external_offset_must_be_a_byte_count(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    model = _load_no_data(path)
    _set_entry(model.graph.initializer[0], "offset", "-4")
    with pytest.raises(UnsafeUpload, match="external data offset is '-4'; expected a whole number of bytes"):
        check_external_data(model, path.parent)


def test_external_tensor_inside_a_subgraph_attribute_is_checked(tmp_path: Path) -> None:
    # An If whose then-branch holds a Constant whose `value` lives in a file outside the folder.
    value = helper.make_tensor("hidden", TensorProto.FLOAT, [4], [0.0] * 4)
    value.ClearField("float_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="../secret.bin")
    out = [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])]
    then_branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=value)], "then", [], out)
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.zeros(4, np.float32)))],
        "else",
        [],
        out,
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["c"], then_branch=then_branch, else_branch=else_branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        out,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.load_from_string(model.SerializeToString())  # as if it had been uploaded
    with pytest.raises(UnsafeUpload, match="tensor 'hidden': external data location '../secret.bin' reaches"):
        check_external_data(model, tmp_path)
