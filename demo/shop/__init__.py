"""A local shop that speaks the real shop's page and JSON shapes, serving generated photos."""
