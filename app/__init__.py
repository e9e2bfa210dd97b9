"""audioproc: audio preprocessing service for speech ML."""

__version__ = "0.1.0"
