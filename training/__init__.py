"""Trains, evaluates and serves the ensemble that names the product in a photo."""
