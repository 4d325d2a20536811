"""Train the `mnist1d_efficientnet` sample: an EfficientNet-B0-style 1-D CNN on MNIST-1D.

Run from the repo root: `.venv/bin/python sample_models/mnist1d_efficientnet/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.

Why this sample: EfficientNet-B0's MBConv blocks add two things to MobileNetV2's inverted
residuals: swish (SiLU) activations and squeeze-and-excitation. When Google made EfficientNet-Lite
for integer-only edge devices (TensorFlow blog, March 2020, "Higher accuracy on vision models with
EfficientNet-Lite"; tensorflow/tpu models/official/efficientnet/lite/README.md) it replaced every
swish with ReLU6, which the post says significantly improved post-training quantization (swish's
unbounded outputs gave wide activation ranges), and removed squeeze-and-excitation, which the same
sources say was poorly supported on some mobile accelerators. Chosen for those two features before
it was measured. Data, head and training recipe are those of `mnist1d_mobilenet`, so the two samples
differ only in their blocks.
"""

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

# (expansion t, kernel k, channels c, repeats n, first stride s): EfficientNet-B0's first five rows
# (16, 24, 40, 80, 112 channels; kernels 3, 3, 5, 3, 5), narrower and shallower, with the
# strides of mnist1d_mobilenet (length 40 -> 20 -> 10). Squeeze-and-excitation to a quarter of
# each block's input channels, as in B0.
SETTINGS = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 48, 2, 1), (6, 5, 56, 1, 1))
STEM, HEAD = 32, 256
EPOCHS, LR, BATCH, WD = 40, 3e-3, 128, 5e-4


def make_model() -> C.FlattenClassifier:
    """stem (k=3) -> MBConv blocks with SE (length 40 -> 20 -> 10) -> 1x1 head -> flatten -> fc; SiLU."""
    return C.FlattenClassifier(C.efficientnet_features(1, 1, STEM, SETTINGS, HEAD), HEAD * 10)


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
            "name": "mnist1d_efficientnet",
            "description": (
                "The same 1-D digit-signal task as mnist1d_mobilenet, read by an EfficientNet-style network: "
                "MobileNet's blocks plus smooth swish activations and channel-attention gates, the two "
                "features Google took out of its phone version, EfficientNet-Lite."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Chosen, before measuring it, for the two features EfficientNet-B0 adds to MobileNetV2's "
                "blocks, swish (SiLU) and squeeze-and-excitation, which Google removed to make "
                "EfficientNet-Lite for integer-only edge devices (TensorFlow blog, March 2020, 'Higher "
                "accuracy on vision models with EfficientNet-Lite'; tensorflow/tpu efficientnet/lite "
                "README): swish was replaced with ReLU6 because that significantly improved post-training "
                "quantization; squeeze-and-excitation was removed as poorly supported on some mobile "
                "accelerators. Data and split: as mnist1d_mobilenet "
                "(mnist1d.data.make_dataset(get_dataset_args()), mnist1d 0.0.2.post1, seed 42; last "
                f"{C.MNIST1D_CALIB} train sequences = calibration, the other {4000 - C.MNIST1D_CALIB} = "
                "train, the 1,000 test sequences = eval). "
                f"Model: EfficientNet-B0-style 1-D CNN, k=3 stem {STEM} ch, MBConv blocks (t, k, c, n, s) "
                f"{[list(s) for s in SETTINGS]} (B0's first five rows scaled down) with depthwise convs, "
                "squeeze-and-excitation to a quarter of each block's input channels and SiLU, 1x1 head "
                f"{HEAD} ch, flatten, Linear; no stochastic depth. Training: as mnist1d_mobilenet: {EPOCHS} "
                f"epochs, AdamW lr {LR} (one-cycle), batch {BATCH}, weight decay {WD}, dropout 0.2, seed 0. "
                "Exported with torch.onnx.export (TorchScript exporter, opset 17, BatchNorm folded). "
                "Script: sample_models/mnist1d_efficientnet/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
