"""Experiment configs (ml_collections files); `configs.common` holds the shared recipes."""
