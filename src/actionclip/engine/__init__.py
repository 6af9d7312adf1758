"""Training and evaluation: the loop, metrics, optimizer recipe, torch.distributed helpers."""
