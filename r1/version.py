"""The R1 release: written into every model.json (`r1_version`)."""
__version__ = "0.2.0"
