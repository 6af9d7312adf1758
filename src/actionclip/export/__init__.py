"""Exports: the towers as ONNX graphs (``graphs.py``), the int8 video graph (``int8.py``) and the export
directory that ``actionclip.onnx_runtime`` runs (``directory.py``)."""
