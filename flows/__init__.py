"""Prefect flows: thin tasks around each stage, and the pipeline chaining them.

Remove the decorators and every function still runs: the work lives in crawler/, curation/
and training/, which know nothing of Prefect.
"""
