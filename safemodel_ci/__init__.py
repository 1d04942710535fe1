"""safemodel-ci: find model files that would run code when loaded, without ever loading them."""

__version__ = "0.1.0"
