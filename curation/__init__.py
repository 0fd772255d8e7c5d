"""Validates, deduplicates and labels the crawled photos, deciding which ones train the model."""
