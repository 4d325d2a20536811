"""Train the `digits_resnet` sample: a ResNet-style 2-D CNN on the 8x8 digits upsampled to 32x32.

Run from the repo root: `.venv/bin/python sample_models/digits_resnet/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.
The convolutions are wide (64 -> 128 -> 256 channels) on purpose: that is where INT8 pays off
on a CPU without VNNI, so this sample shows a real speed-up from static INT8.
"""

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

SIZE = 32
WIDTHS, BLOCKS = (64, 128, 256), (2, 2, 2)
EPOCHS, LR, BATCH, WD = 10, 2e-3, 64, 5e-4


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm, identity (or 1x1 projection) shortcut, ReLU after the Add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class DigitsResNet(nn.Module):
    """stem (3x3, stride 2) -> 3 stages x 2 blocks (64, 128, 256 ch) -> global avg pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = (
            nn.Conv2d(1, WIDTHS[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(WIDTHS[0]),
            nn.ReLU(),
        )
        cin = WIDTHS[0]
        for stage, (width, blocks) in enumerate(zip(WIDTHS, BLOCKS, strict=True), start=1):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if (b == 0 and stage > 1) else 1))
                cin = width
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def shift(xb: torch.Tensor, rng) -> torch.Tensor:
    """Random translation by up to 4 pixels of 32 (one pixel of the original 8x8)."""
    return C.random_shift(xb, rng, 4)


def main() -> None:
    rng = C.setup()
    splits = {k: (C.upsample(x, SIZE), y) for k, (x, y) in C.digits_splits().items()}
    model = DigitsResNet()
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
            "name": "digits_resnet",
            "description": (
                "Recognises a handwritten digit (0-9) from an enlarged 32x32 scan. A heavier, "
                "ResNet-style image classifier where faster 8-bit arithmetic makes a visible difference."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Data: sklearn.datasets.load_digits() (1,797 8x8 images, pixel values / 16 -> [0,1]), "
                "upsampled to 32x32 with torch.nn.functional.interpolate(mode='bilinear', "
                "align_corners=False); the npz files hold the upsampled arrays. Split: "
                "numpy.random.default_rng(0).permutation; first 256 = calibration, next 540 = eval, "
                "remaining 1,001 = train (same split as digits_cnn). Model: ResNet-style, 3x3 stride-2 "
                f"stem, stages {list(WIDTHS)} channels x {list(BLOCKS)} basic blocks, global average pool, "
                f"Linear. Training: {EPOCHS} epochs, AdamW lr {LR} (one-cycle), batch {BATCH}, weight "
                f"decay {WD}, random shifts up to 4 px, seed 0. Exported with torch.onnx.export "
                "(TorchScript exporter, opset 17, BatchNorm folded into Conv). Script: "
                "sample_models/digits_resnet/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
