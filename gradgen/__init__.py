"""gradgen: derive gradients symbolically, emit standalone numpy."""

__version__ = "0.1.0"
