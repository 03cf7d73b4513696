"""pyspk: Kaldi-style recipes for self-supervised speaker embeddings."""

__version__ = "0.1.0"
