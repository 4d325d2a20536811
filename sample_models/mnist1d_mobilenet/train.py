"""Train the `mnist1d_mobilenet` sample: a MobileNetV2-style 1-D CNN on MNIST-1D.

Run from the repo root: `.venv/bin/python sample_models/mnist1d_mobilenet/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.

Why this sample: MobileNet's depthwise-separable, inverted-residual blocks are the textbook
case of a network that loses accuracy under post-training INT8 (Krishnamoorthi 2018,
arXiv:1806.08342; Nagel et al. 2021, arXiv:2106.08295): a depthwise filter has a few taps per
channel, so per-channel ranges differ widely and rounding errors are not averaged away. It was
chosen for that property before it was measured. Data, head and training recipe are those of
`mnist1d_resnet`, so the two samples differ only in their blocks.
"""

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

# (expansion t, channels c, repeats n, first stride s), as in MobileNetV2's table, scaled down.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1))
STEM, HEAD = 32, 256
EPOCHS, LR, BATCH, WD = 40, 3e-3, 128, 5e-4


def make_model() -> C.FlattenClassifier:
    """stem (k=3) -> inverted residuals (length 40 -> 20 -> 10) -> 1x1 head -> flatten -> fc."""
    return C.FlattenClassifier(C.mobilenet_v2_features(1, 1, STEM, SETTINGS, HEAD), HEAD * 10)


def main() -> None:
    splits = C.mnist1d_splits()
    rng = C.setup()
    model = make_model()
    secs = C.fit_classifier(
        model, *splits["train"], epochs=EPOCHS, lr=LR, batch_size=BATCH, weight_decay=WD, rng=rng
    )
    C.finish(
        HERE,
        model,
        torch.zeros(1, 1, 40),
        "input",
        splits,
        "classification",
        {
            "name": "mnist1d_mobilenet",
            "description": (
                "The same 1-D digit-signal task as mnist1d_resnet, read by a MobileNet-style network: "
                "the compact, phone-friendly design that is known to lose accuracy when squeezed to 8 bits."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Chosen, before measuring it, as an architecture known to be sensitive to post-training "
                "INT8 (depthwise-separable inverted residuals; Krishnamoorthi 2018, Nagel et al. 2021). "
                "Data and split: as mnist1d_resnet (mnist1d.data.make_dataset(get_dataset_args()), "
                f"mnist1d 0.0.2.post1, seed 42; last {C.MNIST1D_CALIB} train sequences = calibration, the "
                f"other {4000 - C.MNIST1D_CALIB} = train, the 1,000 test sequences = eval). Model: "
                f"MobileNetV2-style 1-D CNN, k=3 stem {STEM} ch, inverted residuals (t, c, n, s) "
                f"{[list(s) for s in SETTINGS]} with k=3 depthwise convs and ReLU6, 1x1 head {HEAD} ch, "
                f"flatten, Linear. Training: as mnist1d_resnet: {EPOCHS} epochs, AdamW lr {LR} "
                f"(one-cycle), batch {BATCH}, weight decay {WD}, dropout 0.2, seed 0. Exported with "
                "torch.onnx.export (TorchScript exporter, opset 17, BatchNorm folded). "
                "Script: sample_models/mnist1d_mobilenet/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
