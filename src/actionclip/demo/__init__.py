"""``actionclip demo``: the paradigm of the paper (pre-train, prompt, fine-tune) end to end on generated videos of
moving shapes, offline on a CPU. ``world.py``: the data; ``recipes.py``: the models and how they train;
``report.py``: what is measured and shown; ``run.py``: the run, ``run_demo``."""
