"""Vision towers and their image processors."""
