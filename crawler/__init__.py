"""Fetches a shop's best sellers and their review photos into the store and the manifest."""
