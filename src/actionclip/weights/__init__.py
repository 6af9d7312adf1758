"""Weight files read safely, with no pickle executed: safetensors, TorchScript archives, ``torch.load(weights_only=True)``;
tensor digests, and ``CheckpointError`` for a file that cannot be used."""
