"""Train the `digits_cnn` sample: a small CNN on scikit-learn's 8x8 handwritten digits.

Run from the repo root: `.venv/bin/python sample_models/digits_cnn/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.
"""

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

EPOCHS, LR, BATCH, WD = 40, 3e-3, 64, 1e-4


class DigitsCNN(nn.Module):
    """conv16 -> conv32 -> maxpool -> conv64 -> fc64 -> fc10 (BatchNorm folds into the convs)."""

    def __init__(self) -> None:
        super().__init__()
        # Flat attributes so the ONNX node names read `/conv1/Conv`, `/fc1/Gemm`.
        self.conv1, self.bn1, self.relu1 = (
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.conv2, self.bn2, self.relu2 = (
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.relu3 = (
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.fc1, self.relu4, self.dropout = nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Dropout(0.2)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc2(self.dropout(self.relu4(self.fc1(torch.flatten(x, 1)))))


def shift(xb: torch.Tensor, rng) -> torch.Tensor:
    """Random translation by up to one pixel: cheap augmentation for 1,001 training images."""
    return C.random_shift(xb, rng, 1)


def main() -> None:
    rng = C.setup()
    splits = C.digits_splits()
    model = DigitsCNN()
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
        torch.zeros(1, 1, 8, 8),
        "input",
        splits,
        "classification",
        {
            "name": "digits_cnn",
            "description": (
                "Reads a tiny 8x8 scan of a handwritten digit and says which digit (0-9) it is. A small, "
                "fast image classifier, handy for quick checks."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Data: sklearn.datasets.load_digits() (1,797 8x8 images, pixel values / 16 -> [0,1]). "
                "Split: numpy.random.default_rng(0).permutation; first 256 = calibration, next 540 = "
                f"eval, remaining 1,001 = train. Training: {EPOCHS} epochs, AdamW lr {LR} (one-cycle), "
                f"batch {BATCH}, weight decay {WD}, random 1-pixel shifts, seed 0. Exported with "
                "torch.onnx.export (TorchScript exporter, opset 17, BatchNorm folded). Script: "
                "sample_models/digits_cnn/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
