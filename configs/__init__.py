"""Experiment configs: one ml_collections file per experiment, shared defaults in common.py."""
