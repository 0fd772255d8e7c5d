"""The demo: a generated shop in the real shop's shapes, its scripted annotators and the flow that
runs the pipeline on it end to end. No production package imports it."""
