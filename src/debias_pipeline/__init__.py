"""debias_pipeline: learning true user preference from biased implicit feedback."""

__version__ = "0.1.0"
