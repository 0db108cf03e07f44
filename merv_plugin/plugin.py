"""Entry point of this plugin package (``llava.plugins``)."""


def register() -> None:
    """Registers this package's contributions with the core (filled in as the package grows)."""
