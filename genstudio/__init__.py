"""genstudio: a desktop playground for generative models."""

__version__ = "0.1.0"
