"""Bottom layer: errors, settings, week intervals, lake schemas, run plans."""
