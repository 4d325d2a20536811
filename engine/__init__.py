"""quantdash engine: really quantize ONNX models per layer and measure what it buys and costs."""

__version__ = "0.3.0"
