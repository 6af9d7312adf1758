"""Video files without torch: PyAV decoding, frame sampling and frame crops, shared by the torch datasets and the
torch-free ONNX runtime."""
