"""Experiments that reproduce the paper's claims at a size this machine runs (docs/experiments.md)."""
