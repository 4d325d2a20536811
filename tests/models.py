"""Tiny seeded models built in code, exported to ONNX: fixtures for engine tests."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.c2(torch.relu(self.c1(x))))


class TinyCNN(nn.Module):
    """Residual CNN on 1x8x8 inputs, 10 classes: Conv, Relu, Add, ReduceMean, Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block = _Block(16)
        self.head = nn.Linear(16, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.stem(x))).mean((2, 3))
        return self.fc(torch.relu(self.head(h)))


class TinyTransformer(nn.Module):
    """One causal self-attention block over 16 tokens: MatMul-heavy, every Linear K >= 32."""

    def __init__(self, vocab: int = 24, d: int = 64, t: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, t, d) * 0.1)
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        self.out = nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.full((t, t), float("-inf")), 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens) + self.pos
        h = self.ln1(x)
        att = self.q(h) @ self.k(h).transpose(1, 2) / 8.0 + self.mask
        x = x + self.o(torch.softmax(att, -1) @ self.v(h))
        x = x + self.down(torch.relu(self.up(self.ln2(x))))
        return self.out(x)


def export(model: nn.Module, example: torch.Tensor, input_name: str) -> bytes:
    """ONNX bytes (opset 17, dynamic batch) of a model in eval mode."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            buf,
            input_names=[input_name],
            output_names=["logits"],
            dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def tiny_cnn(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """(model bytes, 64 random inputs keyed by input name)."""
    torch.manual_seed(seed)
    data = np.random.default_rng(seed).random((64, 1, 8, 8), dtype=np.float32)
    return export(TinyCNN(), torch.from_numpy(data[:1]), "input"), {"input": data}


def tiny_transformer(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    torch.manual_seed(seed)
    tokens = np.random.default_rng(seed).integers(0, 24, (64, 16)).astype(np.int64)
    return export(TinyTransformer(), torch.from_numpy(tokens[:1]), "tokens"), {"tokens": tokens}
