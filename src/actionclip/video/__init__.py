"""Video files without torch: PyAV decoding (``decode.py``), frame sampling (``sampling.py``) and reading the sampled
clips (``clips.py``), shared by the torch datasets and the torch-free ONNX runtime."""
