"""Training recipe: arguments, data, trainer, and the ``train_mem.py`` entry point."""
