"""Evaluation data users bring: read from real files, checked against tiny ONNX models, split.

Every refusal is asserted on the words a user reads: what was expected and what was found.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from engine import user_data
from engine.model_io import ModelError
from engine.safe_files import UnsafeUpload
from engine.user_data import (
    DATA_FORMATS_HELP,
    DataError,
    InputSpec,
    cast_to_specs,
    check_dataset,
    input_specs,
    read_dataset,
    split_calibration,
    task_for,
)

RNG = np.random.default_rng(0)


def _model(inputs: list[tuple[str, int, list[int | str]]], weight_rows: int | None = None) -> onnx.ModelProto:
    """Each input flattened and multiplied by a weight; outputs y0, y1... (enough for input_specs)."""
    nodes, inits, outputs = [], [], []
    for i, (name, elem, shape) in enumerate(inputs):
        rows = weight_rows or int(np.prod([d for d in shape[1:] if isinstance(d, int)] or [1]))
        w = numpy_helper.from_array(RNG.standard_normal((rows, 3)).astype(np.float32), f"w{i}")
        inits.append(w)
        src = name
        if elem != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [name], [f"c{i}"], to=TensorProto.FLOAT))
            src = f"c{i}"
        nodes.append(helper.make_node("Flatten", [src], [f"f{i}"]))
        nodes.append(helper.make_node("MatMul", [f"f{i}", f"w{i}"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["N", 3]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, e, s) for n, e, s in inputs],
        outputs,
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


CNN = _model([("x", TensorProto.FLOAT, ["N", 1, 8, 8])])
NHWC = _model([("x", TensorProto.FLOAT, ["N", 8, 8, 3])])
TABULAR = _model([("x", TensorProto.FLOAT, ["N", 4])])
TWO = _model([("a", TensorProto.FLOAT, ["N", 4]), ("ids", TensorProto.INT64, ["N", "seq"])])


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _read(
    path: Path, model: onnx.ModelProto, tmp_path: Path, name: str | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    return read_dataset(path, input_specs(model), tmp_path / "work", name)


def _images(n: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> list[Image.Image]:
    channels = 1 if mode == "L" else 3
    out = []
    for _ in range(n):
        px = RNG.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        out.append(Image.fromarray(px[..., 0] if mode == "L" else px))
    return out


def _image_zip(
    path: Path,
    images: dict[str, Image.Image],
    labels_csv: str | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, im in images.items():
            buf = path.parent / f"_{Path(name).name}"
            im.save(buf)
            z.write(buf, name)
            buf.unlink()
        if labels_csv is not None:
            z.writestr("labels.csv", labels_csv)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


# --- input_specs -------------------------------------------------------------------------------


def test_input_specs_lists_real_inputs_with_dtypes_and_dynamic_dims() -> None:
    model = onnx.ModelProto()
    model.CopyFrom(TWO)
    # An old exporter lists a weight among the inputs too: not a real input.
    model.graph.input.append(helper.make_tensor_value_info("w0", TensorProto.FLOAT, [4, 3]))
    specs = input_specs(model)
    assert specs == [
        InputSpec("a", np.dtype(np.float32), ("N", 4)),
        InputSpec("ids", np.dtype(np.int64), ("N", "seq")),
    ]


def test_input_specs_refuses_a_string_input() -> None:
    model = _model([("s", TensorProto.STRING, ["N", 1])])
    with pytest.raises(ModelError, match="'s' has element type STRING; expected a numeric type"):
        input_specs(model)


# --- .npz --------------------------------------------------------------------------------------


def test_npz_with_labels(tmp_path: Path) -> None:
    x = RNG.standard_normal((10, 1, 8, 8)).astype(np.float32)
    y = np.arange(10) % 3
    inputs, labels = _read(_npz(tmp_path / "d.npz", x=x, labels=y), CNN, tmp_path)
    np.testing.assert_array_equal(inputs["x"], x)
    assert labels is not None and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, y)
    assert task_for(labels) == "classification"


def test_npz_without_labels_two_inputs(tmp_path: Path) -> None:
    a = RNG.standard_normal((6, 4)).astype(np.float32)
    ids = RNG.integers(0, 100, (6, 5)).astype(np.int64)
    inputs, labels = _read(_npz(tmp_path / "d.npz", a=a, ids=ids), TWO, tmp_path)
    assert sorted(inputs) == ["a", "ids"] and labels is None
    assert task_for(labels) == "fidelity_only"


def test_npz_float_labels_that_are_whole_numbers_become_int64(tmp_path: Path) -> None:
    x = RNG.standard_normal((8, 4)).astype(np.float32)
    _, labels = _read(_npz(tmp_path / "d.npz", x=x, labels=np.arange(8, dtype=np.float64)), TABULAR, tmp_path)
    assert labels is not None and labels.dtype == np.int64


def test_npz_wrong_input_name_lists_the_models_inputs(tmp_path: Path) -> None:
    path = _npz(tmp_path / "stored-7f3a.npz", image=np.zeros((8, 1, 8, 8), np.float32))
    with pytest.raises(DataError) as e:
        _read(path, CNN, tmp_path, "my_data.npz")
    msg = str(e.value)
    assert msg.startswith("my_data.npz: unexpected array 'image'")
    assert "expected one array per model input ('x') and optionally 'labels'" in msg
    assert "stored-7f3a" not in msg


def test_npz_missing_input(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", a=np.zeros((8, 4), np.float32))
    with pytest.raises(
        DataError, match=r"no data for model input 'ids'; expected one array per model input "
    ):
        _read(path, TWO, tmp_path)


def test_npz_wrong_shape_names_dynamic_dims(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 1, 9, 8), np.float32))
    with pytest.raises(DataError) as e:
        _read(path, CNN, tmp_path, "d.npz")
    assert (
        "input 'x': expected shape [N, 1, 8, 8], found [8, 1, 9, 8] (dimension 2 is 9 instead of 8)"
        in str(e.value)
    )


def test_npz_wrong_rank(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 64), np.float32))
    with pytest.raises(
        DataError, match=r"expected 4 dimensions \[N, 1, 8, 8\], found 2 dimensions \[8, 64\]"
    ):
        _read(path, CNN, tmp_path)


def test_npz_wrong_dtype(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 1, 8, 8), np.uint8))
    with pytest.raises(
        DataError, match=r"input 'x': expected float32 values \(the model's input type\), found uint8"
    ):
        _read(path, CNN, tmp_path)


def test_float64_and_int32_accepted_then_cast(tmp_path: Path) -> None:
    a = RNG.standard_normal((8, 4))
    ids = RNG.integers(0, 9, (8, 3)).astype(np.int32)
    inputs, _ = _read(_npz(tmp_path / "d.npz", a=a, ids=ids), TWO, tmp_path)
    assert inputs["a"].dtype == np.float64 and inputs["ids"].dtype == np.int32
    notes: list[str] = []
    cast = cast_to_specs(inputs, input_specs(TWO), notes)
    assert cast["a"].dtype == np.float32 and cast["ids"].dtype == np.int64
    assert notes == [
        "input 'a': float64 data converted to float32, the model's type",
        "input 'ids': int32 data converted to int64, the model's type",
    ]
    np.testing.assert_allclose(cast["a"], a, rtol=1e-6)
    # Other arrays are left as they are (check_dataset refuses them; cast does not hide it).
    odd = {"a": np.zeros((8, 4), np.float16)}
    assert cast_to_specs(odd, input_specs(TWO))["a"].dtype == np.float16


def test_nan_reports_count_and_first_sample(tmp_path: Path) -> None:
    x = np.zeros((8, 1, 8, 8), np.float32)
    x[5, 0, 1, 1] = np.nan
    x[6, 0, 2, 2] = np.nan
    with pytest.raises(DataError, match=r"found 2 non-finite values \(2 NaN, 0 Inf\), the first in sample 5"):
        _read(_npz(tmp_path / "d.npz", x=x), CNN, tmp_path)


def test_inf_reports_count_and_first_sample(tmp_path: Path) -> None:
    x = np.zeros((8, 4), np.float32)
    x[3, 1] = np.inf
    with pytest.raises(
        DataError, match=r"expected finite numbers, found 1 non-finite values \(0 NaN, 1 Inf\), "
    ):
        _read(_npz(tmp_path / "d.npz", x=x), TABULAR, tmp_path)


def test_label_count_mismatch(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 4), np.float32), labels=np.zeros(7, np.int64))
    with pytest.raises(DataError, match=r"labels: expected one per sample \(8\), found 7"):
        _read(path, TABULAR, tmp_path)


def test_negative_labels(tmp_path: Path) -> None:
    labels = np.array([0, 1, -1, 2, 0, 1, 2, -3])
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 4), np.float32), labels=labels)
    with pytest.raises(
        DataError, match=r"expected class indices >= 0, found 2 negative values, the first in sample 2"
    ):
        _read(path, TABULAR, tmp_path)


def test_fractional_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((8, 4), np.float32), labels=np.linspace(0, 1, 8))
    with pytest.raises(DataError, match="labels: expected integer class indices, found fractional values"):
        _read(path, TABULAR, tmp_path)


def test_language_model_labels_may_ignore_positions_with_minus_100() -> None:
    specs = [InputSpec("ids", np.dtype(np.int64), ("batch", "seq"))]
    ids = np.zeros((6, 5), np.int64)
    labels = np.ones((6, 5), np.int64)
    labels[:, 0] = -100
    check_dataset({"ids": ids}, labels, specs)
    assert task_for(labels) == "language_model"
    labels[0, 1] = -1
    with pytest.raises(DataError, match="-100 marks a position to ignore"):
        check_dataset({"ids": ids}, labels, specs)


def test_object_array_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}] * 8, dtype=object))  # pickled inside: must never be loaded
    with pytest.raises(DataError) as e:
        _read(path, TABULAR, tmp_path, "pickled.npz")
    msg = str(e.value)
    assert msg.startswith("pickled.npz: array 'x' holds Python objects (dtype=object)")
    assert "Expected plain numeric arrays" in msg


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"d.npz is not a readable .npz of plain arrays"):
        _read(path, TABULAR, tmp_path)


def test_a_single_npy_array_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((8, 4), np.float32))
    with pytest.raises(DataError, match=r"holds a single array \(an .npy file\); expected an .npz"):
        _read(path, TABULAR, tmp_path)


def test_big_endian_arrays_are_read_in_native_order(tmp_path: Path) -> None:
    x = RNG.standard_normal((8, 4)).astype(">f4")
    inputs, _ = _read(_npz(tmp_path / "d.npz", x=x), TABULAR, tmp_path)
    assert inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(inputs["x"], x)


def test_npz_over_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_data, "MAX_DATA_BYTES", 1000)
    path = _npz(tmp_path / "d.npz", x=np.zeros((80, 4), np.float32))
    with pytest.raises(DataError, match=r"its arrays hold .* GB; expected at most"):
        _read(path, TABULAR, tmp_path)


def test_too_few_samples(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32))
    with pytest.raises(
        DataError, match=r"expected at least 4 samples \(some calibrate, the rest evaluate\), found 3"
    ):
        _read(path, TABULAR, tmp_path)


def test_inputs_of_different_lengths() -> None:
    specs = input_specs(TWO)
    with pytest.raises(
        DataError, match=r"expected every input to hold the same number of samples, found 'a': 8, 'ids': 9"
    ):
        check_dataset({"a": np.zeros((8, 4), np.float32), "ids": np.zeros((9, 2), np.int64)}, None, specs)


def test_several_problems_are_reported_together() -> None:
    specs = input_specs(TWO)
    with pytest.raises(DataError) as e:
        check_dataset({"a": np.zeros((8, 5), np.uint8), "ids": np.zeros((8, 2), np.int64)}, None, specs)
    msg = str(e.value)
    assert msg.startswith("2 problems with the data:")
    assert "dimension 1 is 5 instead of 4" in msg and "expected float32 values" in msg


def test_fixed_batch_dimension_is_explained() -> None:
    specs = [InputSpec("x", np.dtype(np.float32), (1, 4))]
    with pytest.raises(DataError, match="expected a model exported with a dynamic batch dimension"):
        check_dataset({"x": np.zeros((8, 4), np.float32)}, None, specs)


# --- image .zip --------------------------------------------------------------------------------


def test_image_zip_nchw_with_labels(tmp_path: Path) -> None:
    images = dict(zip([f"img{i}.png" for i in range(6)], _images(6), strict=True))
    rows = "file,label\n" + "".join(f"img{i}.png,{i % 3}\n" for i in reversed(range(6)))
    path = _image_zip(tmp_path / "u.zip", images, rows)
    inputs, labels = _read(path, CNN, tmp_path)
    x = inputs["x"]
    assert x.shape == (6, 1, 8, 8) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Rows follow labels.csv: the first sample is img5.
    np.testing.assert_allclose(x[0, 0], np.asarray(images["img5.png"]) / 255, rtol=1e-6)
    assert labels is not None and labels.tolist() == [2, 1, 0, 2, 1, 0]
    assert (tmp_path / "work").is_dir()


def test_image_zip_nhwc_rgb_without_labels_in_name_order(tmp_path: Path) -> None:
    ims = _images(5, mode="RGB")
    path = _image_zip(
        tmp_path / "u.zip", {f"b{i}.jpg" if i % 2 else f"a{i}.png": im for i, im in enumerate(ims)}
    )
    inputs, labels = _read(path, NHWC, tmp_path)
    x = inputs["x"]
    assert x.shape == (5, 8, 8, 3) and x.dtype == np.float32 and labels is None
    # Sorted names: a0.png, a2.png, a4.png, b1.jpg, b3.jpg; PNG is lossless.
    np.testing.assert_allclose(x[1], np.asarray(ims[2]) / 255, rtol=1e-6)


def test_colour_changes_to_fit_the_input_are_noted(tmp_path: Path) -> None:
    """Browser QA: colour photos given to a 1-channel model were turned grey without a word."""
    colour = _images(3, mode="RGB")
    grey_rgb = Image.fromarray(np.repeat(np.asarray(_images(1)[0])[..., None], 3, axis=2))
    transparent = Image.fromarray(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA")
    images = {"c0.png": colour[0], "c1.png": colour[1], "g.png": grey_rgb, "t.png": transparent}
    notes: list[str] = []
    read_dataset(_image_zip(tmp_path / "u.zip", images), input_specs(CNN), tmp_path / "w", "u.zip", notes)
    assert notes == [
        "3 of 4 images in u.zip were in colour, converted to grey for the model's 1-channel input",
        "1 of 4 images in u.zip had transparency, dropped (pixels kept as stored)",
    ]  # the RGB file of grey pixels lost nothing: not counted
    grey = {f"{i}.png": im for i, im in enumerate(_images(4))}
    notes = []
    read_dataset(_image_zip(tmp_path / "v.zip", grey), input_specs(NHWC), tmp_path / "w", None, notes)
    assert notes == ["4 of 4 images in v.zip were grey, repeated into the 3 channels the model's input takes"]
    notes = []
    read_dataset(_image_zip(tmp_path / "x.zip", grey), input_specs(CNN), tmp_path / "w", None, notes)
    assert notes == []  # grey for a grey input: nothing changed


def test_transparency_is_noted_only_when_a_pixel_is_not_fully_opaque(tmp_path: Path) -> None:
    """Every RGBA or LA file was said to have 'had transparency, dropped', even with all alpha 255."""
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    opaque = np.full((8, 8, 1), 255, dtype=np.uint8)
    half = opaque.copy()
    half[0, 0] = 128
    grey = Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    # Palette files with one transparent index: seen only if a pixel uses it.
    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    palette_unused, palette_used = palette.copy(), palette.copy()
    palette_unused.info["transparency"] = 200
    palette_used.info["transparency"] = 5
    opaque_files = {
        "rgba.png": Image.fromarray(np.concatenate([rgb, opaque], axis=2), "RGBA"),
        "la.png": Image.fromarray(np.stack([np.asarray(grey), opaque[..., 0]], axis=2), "LA"),
        "p.png": palette_unused,
        "rgb.png": Image.fromarray(rgb),
    }
    notes: list[str] = []
    read_dataset(_image_zip(tmp_path / "o.zip", opaque_files), input_specs(NHWC), tmp_path / "w", None, notes)
    assert not any("transparency" in note for note in notes), notes
    see_through = {
        "rgba.png": Image.fromarray(np.concatenate([rgb, half], axis=2), "RGBA"),
        "p.png": palette_used,
        "rgb.png": Image.fromarray(rgb),
        "la.png": Image.fromarray(np.stack([np.asarray(grey), opaque[..., 0]], axis=2), "LA"),
    }
    notes = []
    read_dataset(_image_zip(tmp_path / "t.zip", see_through), input_specs(NHWC), tmp_path / "w", None, notes)
    assert notes == [
        "1 of 4 images in t.zip were grey, repeated into the 3 channels the model's input takes",
        "2 of 4 images in t.zip had transparency, dropped (pixels kept as stored)",
    ]  # the opaque LA file is grey, not see-through


def test_image_zip_in_one_top_folder_with_os_metadata(tmp_path: Path) -> None:
    images = {f"set/{i}.bmp": im for i, im in enumerate(_images(4))}
    path = _image_zip(
        tmp_path / "u.zip",
        images,
        extra={
            "set/labels.csv": b"file,label\n0.bmp,0\n1.bmp,1\n2.bmp,0\n3.bmp,1\n",
            "__MACOSX/set/._0.bmp": b"xx",
        },
    )
    inputs, labels = _read(path, CNN, tmp_path)
    assert inputs["x"].shape == (4, 1, 8, 8) and labels is not None and labels.tolist() == [0, 1, 0, 1]


def test_image_of_wrong_size(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    images["odd.png"] = _images(1, size=(10, 12))[0]
    with pytest.raises(DataError) as e:
        _read(_image_zip(tmp_path / "u.zip", images), CNN, tmp_path, "pics.zip")
    msg = str(e.value)
    assert "pics.zip: image 'odd.png' is 10 x 12 pixels (width x height); expected 8 x 8" in msg
    assert "Images are not resized" in msg


def test_images_of_dynamic_size_must_share_one(tmp_path: Path) -> None:
    model = _model([("x", TensorProto.FLOAT, ["N", 3, "h", "w"])], weight_rows=3)
    images = {f"{i}.png": im for i, im in enumerate(_images(4, size=(6, 5), mode="RGB"))}
    inputs, _ = _read(_image_zip(tmp_path / "u.zip", images), model, tmp_path)
    assert inputs["x"].shape == (4, 3, 5, 6)
    images["9.png"] = _images(1, size=(7, 5), mode="RGB")[0]
    with pytest.raises(
        DataError, match=r"image '9.png' is 7 x 5 pixels .*expected 6 x 5, the size of the first"
    ):
        _read(_image_zip(tmp_path / "v.zip", images), model, tmp_path)


def test_labels_csv_naming_a_missing_file(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    rows = "file,label\n0.png,0\n1.png,1\n2.png,0\n3.png,1\nghost.png,2\n"
    with pytest.raises(DataError, match=r"labels.csv names 'ghost.png', not in the archive"):
        _read(_image_zip(tmp_path / "u.zip", images, rows), CNN, tmp_path)


def test_image_without_a_label(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(5))}
    rows = "file,label\n0.png,0\n1.png,1\n2.png,0\n3.png,1\n"
    with pytest.raises(
        DataError, match=r"image '4.png' has no row in labels.csv; expected a label for every image"
    ):
        _read(_image_zip(tmp_path / "u.zip", images, rows), CNN, tmp_path)


def test_labels_csv_with_a_bad_label(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    rows = "file,label\n0.png,0\n1.png,cat\n2.png,0\n3.png,1\n"
    with pytest.raises(
        DataError, match=r"labels.csv, row 3, column 'label': expected an integer class index, found 'cat'"
    ):
        _read(_image_zip(tmp_path / "u.zip", images, rows), CNN, tmp_path)


def test_non_image_member(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    path = _image_zip(tmp_path / "u.zip", images, extra={"run_me.py": b"print('hi')"})
    with pytest.raises(DataError, match=r"unexpected file 'run_me.py'; expected only images \(.png .jpg"):
        _read(path, CNN, tmp_path)


def test_unsafe_archive_is_refused_before_extraction(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    path = _image_zip(tmp_path / "u.zip", images, extra={"../escape.png": b"x"})
    with pytest.raises(UnsafeUpload, match=r"^pics.zip: zip member '../escape.png' reaches outside"):
        _read(path, CNN, tmp_path, "pics.zip")
    assert not (tmp_path / "escape.png").exists()
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "u.zip"
    path.write_bytes(b"PK but not a zip")
    with pytest.raises(ModelError, match=r"^pics.zip: not a readable zip archive"):
        _read(path, CNN, tmp_path, "pics.zip")


def test_undecodable_image(tmp_path: Path) -> None:
    images = {f"{i}.png": im for i, im in enumerate(_images(4))}
    path = _image_zip(tmp_path / "u.zip", images, extra={"fake.png": b"\x89PNG but not really"})
    with pytest.raises(DataError, match=r"image 'fake.png' could not be decoded"):
        _read(path, CNN, tmp_path)


def test_image_zip_for_a_model_without_an_image_input(tmp_path: Path) -> None:
    path = _image_zip(tmp_path / "u.zip", {f"{i}.png": im for i, im in enumerate(_images(4))})
    with pytest.raises(DataError, match=r"an image .zip fits a model with one input of shape \[N, C, H, W\]"):
        _read(path, TABULAR, tmp_path)


# --- .csv --------------------------------------------------------------------------------------


def test_csv_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,label,c,d\n" + "".join(f"{i},{i * 0.5},{i % 2},-1,2e3\n" for i in range(6)) + "\n")
    inputs, labels = _read(path, TABULAR, tmp_path)
    assert inputs["x"].shape == (6, 4) and inputs["x"].dtype == np.float32
    np.testing.assert_allclose(inputs["x"][3], [3, 1.5, -1, 2000])
    assert labels is not None and labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_csv_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n" + "1,2,3,4\n" * 5)
    inputs, labels = _read(path, TABULAR, tmp_path)
    assert inputs["x"].shape == (5, 4) and labels is None


def test_csv_non_numeric_cell_names_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "stored.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n1,2,3,4\n1,2,three,4\n1,2,3,4\n")
    with pytest.raises(DataError) as e:
        _read(path, TABULAR, tmp_path, "my.csv")
    assert str(e.value) == "my.csv, row 4, column 'c' (C): expected a number, found 'three'"


def test_csv_empty_cell(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n1,,3,4\n1,2,3,4\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"row 3, column 'b' \(B\): expected a number, found an empty cell"):
        _read(path, TABULAR, tmp_path)


def test_csv_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,label\n" + "1,2,3,0\n" * 5)
    with pytest.raises(
        DataError, match=r"expected 4 feature columns .* plus an optional 'label' column, found 3: 'a'"
    ):
        _read(path, TABULAR, tmp_path)


def test_csv_for_a_model_with_image_input(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d\n" + "1,2,3,4\n" * 5)
    with pytest.raises(DataError, match=r"a .csv fits a model with one input of shape \[N, features\]"):
        _read(path, CNN, tmp_path)


def test_unknown_suffix_shows_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="expected an evaluation set ending in .npz, .zip or .csv") as e:
        _read(path, TABULAR, tmp_path)
    assert DATA_FORMATS_HELP in str(e.value)


# --- split and task ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "n_cal"), [(4, 2), (9, 2), (40, 10), (2000, 256)])
def test_split_sizes_and_disjointness(n: int, n_cal: int) -> None:
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    labels = np.arange(n) % 5
    calib, evaluate, eval_labels = split_calibration({"x": x}, labels)
    assert len(calib["x"]) == n_cal and len(evaluate["x"]) == n - n_cal
    assert set(calib["x"][:, 0]).isdisjoint(evaluate["x"][:, 0])
    np.testing.assert_array_equal(np.concatenate([calib["x"], evaluate["x"]]), x)
    assert eval_labels is not None
    np.testing.assert_array_equal(eval_labels, labels[n_cal:])
    assert split_calibration({"x": x}, None)[2] is None


def test_task_for() -> None:
    assert task_for(None) == "fidelity_only"
    assert task_for(np.zeros(4, np.int64)) == "classification"
    assert task_for(np.zeros((4, 7), np.int64)) == "language_model"
    with pytest.raises(DataError, match="found 3 dimensions"):
        task_for(np.zeros((4, 2, 2), np.int64))


def test_formats_help_names_the_three_formats() -> None:
    for word in (".npz", ".zip", ".csv", "labels.csv", "[0, 1]"):
        assert word in DATA_FORMATS_HELP


def test_a_grey_file_with_a_transparent_value_is_see_through_only_where_a_pixel_has_it(
    tmp_path: Path,
) -> None:
    """Review: a 16-bit grey PNG whose transparent value a pixel has was not noted (Pillow's RGBA
    conversion of such a file loses the value)."""
    from engine.user_data import _has_see_through_pixels

    for mode, dtype, value in (("I;16", np.uint16, 1000), ("L", np.uint8, 7)):
        pixels = np.full((4, 4), value + 1, dtype=dtype)
        for used in (False, True):
            pixels[0, 0] = value if used else value + 1
            path = tmp_path / f"{mode}-{used}.png"
            Image.fromarray(pixels).save(path, transparency=value)  # the mode follows the dtype
            with Image.open(path) as im:
                assert im.info.get("transparency") == value, im.info  # as a decoder gives it
                assert _has_see_through_pixels(im) is used, (mode, used)
