"""The command line: ``main.py`` builds the ``actionclip`` parser from one module per command group; shared option
types live in ``options.py`` and the model source options in ``model_options.py``."""
