"""hitpredict: predict from a track's audio alone whether it will be popular."""

__version__ = "0.1.0"
