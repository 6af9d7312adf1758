"""Inference shared by predict, serve and timelines: scoring, inputs, the text-feature cache, collections and
the runtime backends (torch, ONNX Runtime)."""
