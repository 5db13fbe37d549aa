"""Measuring a model's costs: params and MACs, latency (ONNX Runtime or PyTorch), ONNX and int8 file sizes."""
