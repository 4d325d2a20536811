"""Train the `mnist1d_resnet` sample: a residual 1-D CNN on MNIST-1D.

Run from the repo root: `.venv/bin/python sample_models/mnist1d_resnet/train.py`.
Writes model.onnx, calib.npz, eval.npz and card.json next to this file. Deterministic.
MNIST-1D is generated procedurally by the `mnist1d` package (make_dataset); nothing is
downloaded. The npz files carry the generated arrays, so the app never needs mnist1d.
"""

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _common as C  # noqa: E402

WIDTHS, BLOCKS = (32, 64, 128), (2, 2, 2)
EPOCHS, LR, BATCH, WD = 40, 3e-3, 128, 5e-4


class BasicBlock1d(nn.Module):
    """Two k=3 convs with BatchNorm, identity (or 1x1 projection) shortcut, ReLU after the Add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm1d(cout)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv1d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm1d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class Mnist1dResNet(nn.Module):
    """stem (k=5) -> 3 stages x 2 blocks (32, 64, 128 ch; length 40 -> 20 -> 10) -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = (
            nn.Conv1d(1, WIDTHS[0], 5, 1, 2, bias=False),
            nn.BatchNorm1d(WIDTHS[0]),
            nn.ReLU(),
        )
        cin = WIDTHS[0]
        for stage, (width, blocks) in enumerate(zip(WIDTHS, BLOCKS, strict=True), start=1):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock1d(cin, width, 2 if (b == 0 and stage > 1) else 1))
                cin = width
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        # Flatten, not global pooling: where a stroke sits along the sequence carries the class.
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(cin * 10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def main() -> None:
    splits = C.mnist1d_splits()
    rng = C.setup()
    model = Mnist1dResNet()
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
            "name": "mnist1d_resnet",
            "description": (
                "Recognises which digit (0-9) a short, noisy, shifted and stretched 1-D signal was drawn "
                "from. A deliberately hard benchmark where small numeric errors can change the answer."
            ),
            "classes": [str(i) for i in range(10)],
            "train_size": len(splits["train"][1]),
            "provenance": (
                "Data: mnist1d.data.make_dataset(mnist1d.data.get_dataset_args()) (mnist1d 0.0.2.post1, "
                "seed 42, 5,000 sequences of length 40; 4,000 train / 1,000 test), generated in the "
                f"script, never downloaded. Split: last {C.MNIST1D_CALIB} of the train portion = "
                f"calibration, the other {4000 - C.MNIST1D_CALIB} = train, the 1,000 test sequences = eval. "
                "Model: residual 1-D CNN, "
                f"k=5 stem, stages {list(WIDTHS)} channels x {list(BLOCKS)} basic blocks, flatten, Linear. "
                f"Training: {EPOCHS} epochs, AdamW lr {LR} (one-cycle), batch {BATCH}, weight decay {WD}, "
                "dropout 0.2, seed 0. Exported with torch.onnx.export (TorchScript exporter, opset 17, "
                "BatchNorm folded). Script: sample_models/mnist1d_resnet/train.py"
            ),
        },
        secs,
    )


if __name__ == "__main__":
    main()
