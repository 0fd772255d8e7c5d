"""Dedupe: hashing, the near-duplicate index, duplicate groups and the page that shows them."""
