"""``actionclip benchmark``: throughput and MACs of the torch model (``throughput.py``) and of ONNX Runtime
(``onnx_throughput.py``)."""
