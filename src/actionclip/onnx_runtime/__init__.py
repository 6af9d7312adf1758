"""Export directories run by ONNX Runtime without torch: ``runtime.py`` (the model, scoring, ``classify_videos``) and
``bpe.py`` (CLIP's tokenizer)."""
