"""reviewlens: customer review photos in, a model that finds the product in a photo out."""

__version__ = "0.1.0"
