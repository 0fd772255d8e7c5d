"""Labeling in Label Studio: every JSON shape in one module, the client, one push and pull, the rules."""
