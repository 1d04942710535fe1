"""ZIP archives: the container (:mod:`.container`), torch's rules for it (:mod:`.torch_archive`) and
the reader that scans every entry (:mod:`.reader`).

Import from the module that defines a name. The package itself imports nothing, so a helper that
needs only the container (the torch helpers, :mod:`..torchscript`) does not load the reader or the
torch rules with it.
"""
