"""The error of a weight file that cannot be used; without torch, so that listing models imports none."""


class CheckpointError(RuntimeError):
    """A weight file that cannot be read, or does not fit the model it is loaded into."""
