"""Train the `digits_mobilenet` sample: a MobileNetV2-style 2-D CNN on the digits upsampled to 32x32.

Run from the repo root: `.venv/bin/python sample_models/digits_mobilenet/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.

Why this sample: the image counterpart of `mnist1d_mobilenet`. MobileNet's depthwise-separable,
inverted-residual blocks are the textbook case of a network that loses accuracy under
post-training INT8 (Krishnamoorthi 2018, arXiv:1806.08342; Nagel et al. 2021,
arXiv:2106.08295). Chosen for that before it was measured. Data, split, augmentation and
training recipe are those of `digits_resnet`, so the two samples differ only in the network.
"""

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

SIZE = 32
# (expansion t, channels c, repeats n, first stride s), as in MobileNetV2's table, scaled down;
# the stride-2 stem and stages take 32x32 to 4x4.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1))
STEM, HEAD = 32, 256
EPOCHS, LR, BATCH, WD = 10, 2e-3, 64, 5e-4


class DigitsMobileNet(nn.Module):
    """stride-2 stem -> inverted residuals -> 1x1 head -> global average pool -> fc (as MobileNetV2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = C.mobilenet_v2_features(2, 1, STEM, SETTINGS, HEAD, stem_stride=2)  # as MobileNetV2
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(HEAD, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def shift(xb: torch.Tensor, rng) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Random translation by up to 4 pixels of 32 (one pixel of the original 8x8), as digits_resnet."""
    return C.random_shift(xb, rng, 4)


def main() -> None:
    rng = C.setup()
    splits = {k: (C.upsample(x, SIZE), y) for k, (x, y) in C.digits_splits().items()}
    model = DigitsMobileNet()
    secs = C.fit_classifier(
        model,
        *splits["train"],
        epochs=EPOCHS,
        lr=LR,
        batch_size=BATCH,
        weight_decay=WD,
        rng=rng,
        augment=shift,
    )
    C.finish(
        HERE,
        model,
        torch.zeros(1, 1, SIZE, SIZE),
        "input",
        splits,
        "classification",
        {
            "name": "digits_mobilenet",
            "description": (
                "Recognises a handwritten digit (0-9) from an enlarged 32x32 scan, like digits_resnet, "
                "with a MobileNet-style network: the compact, phone-friendly design that is known to "
                "lose accuracy when squeezed to 8 bits."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Chosen, before measuring it, as an architecture known to be sensitive to post-training "
                "INT8 (depthwise-separable inverted residuals; Krishnamoorthi 2018, Nagel et al. 2021). "
                "Data and split: as digits_resnet (sklearn.datasets.load_digits(), pixel values / 16, "
                "bilinear upsampling to 32x32; numpy.random.default_rng(0).permutation: first 256 = "
                "calibration, next 540 = eval, remaining 1,001 = train). Model: MobileNetV2-style CNN, "
                f"3x3 stride-2 stem {STEM} ch, inverted residuals (t, c, n, s) {[list(s) for s in SETTINGS]} "
                f"with 3x3 depthwise convs and ReLU6, 1x1 head {HEAD} ch, global average pool, Linear. "
                f"Training: as digits_resnet: {EPOCHS} epochs, AdamW lr {LR} (one-cycle), batch {BATCH}, "
                f"weight decay {WD}, random shifts up to 4 px, seed 0. Exported with torch.onnx.export "
                "(TorchScript exporter, opset 17, BatchNorm folded into Conv). "
                "Script: sample_models/digits_mobilenet/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
