"""Applications on top of the library: the command line, predict, benchmark, pre-training, plots, the demo."""
