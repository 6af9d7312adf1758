"""What the machine gives: files (atomic writes, locks, the cache root), devices and precision detection, process
memory settings and torch.distributed."""
