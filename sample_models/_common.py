"""Shared helpers for the sample-model train scripts: seeding, data splits, ONNX export, eval, card.

Each `sample_models/<name>/train.py` imports this module (it puts its parent directory on
`sys.path`) so that export, evaluation and card writing are identical for every sample.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SEED = 0
OPSET = 17
# One thread: on this shared 2-core machine, 2 torch threads ran 3-10x *slower* per step
# whenever the other core was busy (threads spin-wait on each other). One thread also makes
# the results independent of the machine's core count.
THREADS = 1
ROOT = Path(__file__).resolve().parent


def setup(seed: int = SEED) -> np.random.Generator:
    """Fix every seed and the thread count; return the numpy generator the script uses."""
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- data ------------------------------------------------------------------------------------

DIGITS_CALIB, DIGITS_EVAL = 256, 540


def digits_splits(seed: int = SEED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 8x8 digits as [N,1,8,8] floats in [0,1], split by one seeded permutation.

    calib = first 256 of the permutation, eval = next 540, train = the rest (1001).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    calib = perm[:DIGITS_CALIB]
    ev = perm[DIGITS_CALIB : DIGITS_CALIB + DIGITS_EVAL]
    train = perm[DIGITS_CALIB + DIGITS_EVAL :]
    return {"train": (x[train], y[train]), "calib": (x[calib], y[calib]), "eval": (x[ev], y[ev])}


MNIST1D_CALIB = 256


def mnist1d_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """make_dataset(get_dataset_args()): 4,000 train / 1,000 test, 40 samples per sequence.

    The last 256 of the train portion are held out for calibration; eval = the 1,000 test sequences.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())  # seeds numpy itself (args.seed = 42); never get_dataset()
    x = d["x"].astype(np.float32)[:, None, :]
    y = d["y"].astype(np.int64)
    x_test = d["x_test"].astype(np.float32)[:, None, :]
    y_test = d["y_test"].astype(np.int64)
    return {
        "train": (x[:-MNIST1D_CALIB], y[:-MNIST1D_CALIB]),
        "calib": (x[-MNIST1D_CALIB:], y[-MNIST1D_CALIB:]),
        "eval": (x_test, y_test),
    }


def save_split(path: Path, input_name: str, x: np.ndarray, labels: np.ndarray) -> None:
    # Uncompressed npz: the app memory-maps nothing, but loading stays trivial and exact.
    np.savez(path, **{input_name: x, "labels": labels})


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N,C,H,W] images (torch.nn.functional.interpolate, align_corners=False)."""
    with torch.no_grad():
        out = nn.functional.interpolate(
            torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False
        )
    return np.ascontiguousarray(out.numpy().astype(np.float32))


# --- training --------------------------------------------------------------------------------


def random_shift(xb: torch.Tensor, rng: np.random.Generator, max_shift: int) -> torch.Tensor:
    """Translate the whole batch by up to `max_shift` pixels along each of the last two axes, zero fill."""
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    out = torch.roll(xb, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, dx:] = 0
    return out


def fit_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    rng: np.random.Generator,
    augment: Any = None,
    label_smoothing: float = 0.0,
) -> float:
    """AdamW + one-cycle LR, cross-entropy; returns wall seconds. `augment(xb, rng)` is optional."""
    t0 = time.time()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    for epoch in range(epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(y)))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb, yb = xt[idx], yt[idx]
            if augment is not None:
                xb = augment(xb, rng)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(yb)
        print(f"epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} train-acc {correct / total:.4f}")
    model.eval()
    return time.time() - t0


# --- MobileNetV2 blocks (the mobilenet samples) ----------------------------------------------


def conv_bn_act(
    dims: int, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU6
) -> nn.Sequential:
    conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(conv(cin, cout, k, stride, k // 2, groups=groups, bias=False), bn(cout), act())


class SqueezeExcite(nn.Module):
    """EfficientNet's squeeze-and-excitation: global average pool -> 1x1 conv (SiLU) -> 1x1 conv
    -> sigmoid, which rescales each channel of the input (as torchvision's SqueezeExcitation)."""

    def __init__(self, dims: int, channels: int, squeeze: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.reduce, self.act = conv(channels, squeeze, 1), nn.SiLU()
        self.expand, self.gate = conv(squeeze, channels, 1), nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand -> k-tap depthwise -> [squeeze-and-excitation] -> 1x1 linear projection; skip
    when shapes match. MobileNetV2's block with ReLU6; with SiLU and SE (squeezed to a quarter of
    the block's input channels) EfficientNet's MBConv, without stochastic depth (the samples share
    one training recipe)."""

    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        stride: int,
        expand: int,
        k: int = 3,
        act: type[nn.Module] = nn.ReLU6,
        squeeze_excite: bool = False,
    ) -> None:
        super().__init__()
        hidden = cin * expand
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        layers: list[nn.Module] = [conv_bn_act(dims, cin, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn_act(dims, hidden, hidden, k, stride, groups=hidden, act=act))
        if squeeze_excite:
            layers.append(SqueezeExcite(dims, hidden, max(1, cin // 4)))
        layers += [conv(hidden, cout, 1, bias=False), bn(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _inverted_residual_features(
    dims: int,
    cin: int,
    stem: int,
    rows: list[tuple[int, int, int, int, int]],
    head: int,
    stem_stride: int,
    act: type[nn.Module],
    squeeze_excite: bool,
) -> nn.Sequential:
    blocks: list[nn.Module] = [conv_bn_act(dims, cin, stem, 3, stem_stride, act=act)]
    width = stem
    for t, k, c, n, s in rows:
        for i in range(n):
            block = InvertedResidual(dims, width, c, s if i == 0 else 1, t, k, act, squeeze_excite)
            blocks.append(block)
            width = c
    blocks.append(conv_bn_act(dims, width, head, 1, act=act))
    return nn.Sequential(*blocks)


def mobilenet_v2_features(
    dims: int,
    cin: int,
    stem: int,
    settings: tuple[tuple[int, int, int, int], ...],
    head: int,
    stem_stride: int = 1,
) -> nn.Sequential:
    """MobileNetV2's feature extractor in 1-D or 2-D: k=3 stem, inverted residuals given as
    (expansion t, channels c, repeats n, first stride s) rows of its table, 1x1 head; ReLU6."""
    rows = [(t, 3, c, n, s) for t, c, n, s in settings]
    return _inverted_residual_features(dims, cin, stem, rows, head, stem_stride, nn.ReLU6, False)


def efficientnet_features(
    dims: int,
    cin: int,
    stem: int,
    settings: tuple[tuple[int, int, int, int, int], ...],
    head: int,
    stem_stride: int = 1,
) -> nn.Sequential:
    """EfficientNet-B0's feature extractor in 1-D or 2-D: k=3 stem, MBConv blocks given as
    (expansion t, kernel k, channels c, repeats n, first stride s) rows of its table, 1x1 head; SiLU."""
    return _inverted_residual_features(dims, cin, stem, list(settings), head, stem_stride, nn.SiLU, True)


class FlattenClassifier(nn.Module):
    """features -> flatten -> dropout 0.2 -> Linear. Flatten, not global pooling, for MNIST-1D:
    where a stroke sits along the sequence carries the class (as in mnist1d_resnet)."""

    def __init__(self, features: nn.Module, flat_width: int, classes: int = 10) -> None:
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(flat_width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.features(x), 1)))


# --- export ----------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
) -> onnx.ModelProto:
    """Export with the TorchScript exporter at opset 17: batch axis dynamic, output `logits`.

    The legacy exporter (dynamo=False) still exists in torch 2.13 and gives readable node
    names (`/layers/layers.0/conv1/Conv`), `Gemm` for 2-D Linear and weights as initializers,
    with BatchNorm folded into the preceding Conv.
    """
    model.eval()
    with warnings.catch_warnings():
        # The legacy exporter warns that it is deprecated; it is still the tidier one here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["logits"],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
        )
    with torch.no_grad():
        out_shape = list(model(example).shape)
    proto = onnx.load(str(path))
    tidy_graph(proto)
    # Only the batch axis is dynamic; the exporter sometimes leaves others symbolic (`Addlogits_dim_1`).
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for i, d in enumerate(dims):
        if i == 0:
            d.dim_param = "batch"
        else:
            d.dim_value = out_shape[i]
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def tidy_graph(proto: onnx.ModelProto) -> None:
    """Constants to initializers; every node a unique non-empty name; folded weights readable names.

    Nodes without a name get `<OpType>_<index>`; duplicates get a `_<n>` suffix. Initializers
    the exporter called `onnx::Conv_123` (BatchNorm folded into a Conv) are renamed after the
    node that uses them: `/layers/layers.0/conv1/Conv` -> `layers.0.conv1.weight` / `.bias`.
    """
    g = proto.graph
    # Constant nodes (reshape targets, scalars, the attention mask) become initializers, so the
    # graph holds only computing nodes and every tensor of data is an initializer.
    constants = [n for n in g.node if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]]
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        g.initializer.append(tensor)
        g.node.remove(node)
    seen: set[str] = set()
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        base, n = name, 1
        while name in seen:
            name = f"{base}_{n}"
            n += 1
        node.name = name
        seen.add(name)

    uses = Counter(inp for node in g.node for inp in node.input)
    init_names = {t.name for t in g.initializer}
    rename: dict[str, str] = {}
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        for slot, inp in enumerate(node.input):
            if slot == 0 or inp not in init_names or not inp.startswith("onnx::") or uses[inp] != 1:
                continue
            new = module_path(node.name) + (".weight" if slot == 1 else ".bias")
            if new in init_names or new in rename.values():
                continue
            rename[inp] = new
    for t in g.initializer:
        if t.name in rename:
            t.name = rename[t.name]
    for node in g.node:
        for slot, inp in enumerate(node.input):
            if inp in rename:
                node.input[slot] = rename[inp]


def module_path(node_name: str) -> str:
    """`/layers/layers.0/conv1/Conv` -> `layers.0.conv1` (TorchScript scopes repeat the parent prefix)."""
    segs = node_name.strip("/").split("/")[:-1] or [node_name]
    path = ""
    for seg in segs:
        path = seg if (not path or seg.startswith(path + ".")) else f"{path}.{seg}"
    return path


def op_summary(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path))
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))


# --- evaluation ------------------------------------------------------------------------------


def run_onnx(path: Path, input_name: str, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = [
        sess.run(["logits"], {input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs)


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, task: str) -> dict[str, float]:
    """accuracy (classification: top-1; language model: next-token over all positions), perplexity."""
    pred = logits.argmax(-1)
    acc = float((pred == labels).mean())
    if task == "classification":
        return {"accuracy": round(acc, 6)}
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], axis=-1).mean()
    return {"accuracy": round(acc, 6), "perplexity": round(float(np.exp(nll)), 6)}


def check_export(model: nn.Module, path: Path, input_name: str, x: np.ndarray) -> None:
    """The ONNX graph must agree with the torch model it came from (catches export bugs)."""
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = run_onnx(path, input_name, x)
    err = float(np.abs(ref - got).max())
    print(f"torch vs onnxruntime max |diff| = {err:.2e}")
    if err > 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise RuntimeError(f"exported model disagrees with torch: max diff {err}")


# --- card ------------------------------------------------------------------------------------


def write_card(folder: Path, **fields: Any) -> dict[str, Any]:
    keys = [
        "name", "description", "task", "metrics", "inputs", "output", "classes",
        "calib_size", "eval_size", "train_size", "params", "seed", "provenance", "fp32_metrics",
    ]  # fmt: skip
    missing = set(keys) - set(fields)
    extra = set(fields) - set(keys)
    if missing or extra:
        raise ValueError(f"card fields: missing {missing}, unexpected {extra}")
    card = {k: fields[k] for k in keys}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def finish(
    folder: Path,
    model: nn.Module,
    example: torch.Tensor,
    input_name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    task: str,
    card: dict[str, Any],
    train_seconds: float,
) -> dict[str, Any]:
    """Export model.onnx, write calib/eval npz, measure FP32 metrics with onnxruntime, write card.json."""
    path = folder / "model.onnx"
    export_onnx(model, example, path, input_name)
    check_export(model, path, input_name, splits["eval"][0][:64])
    save_split(folder / "calib.npz", input_name, *splits["calib"])
    save_split(folder / "eval.npz", input_name, *splits["eval"])
    x_eval, y_eval = splits["eval"]
    fp32 = metrics_from_logits(run_onnx(path, input_name, x_eval), y_eval, task)
    shape = ["batch", *example.shape[1:]]
    out = write_card(
        folder,
        task=task,
        metrics=["accuracy", "perplexity"] if task == "language_model" else ["accuracy"],
        inputs=[{"name": input_name, "shape": shape, "dtype": str(splits["eval"][0].dtype)}],
        output="logits",
        calib_size=len(splits["calib"][1]),
        eval_size=len(y_eval),
        train_size=card.pop("train_size"),
        params=count_params(model),
        seed=SEED,
        fp32_metrics=fp32,
        **card,
    )
    size_kb = os.path.getsize(path) / 1024
    print(f"{out['name']}: params {out['params']:,}  model.onnx {size_kb:.0f} KB  fp32 {fp32}")
    print(f"train time {train_seconds:.1f} s  ops {op_summary(path)}")
    return out
