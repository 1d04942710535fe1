"""pre-commit adapter (installed as ``safemodel_ci.hooks``)."""
