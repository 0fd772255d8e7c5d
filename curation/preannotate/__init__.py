"""Pre-annotation: where the product is and how many objects a photo shows; no network here."""
