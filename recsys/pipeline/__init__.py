"""The weekly pipeline: stage context, the stages, the A/B and drift-monitor jobs, configuration."""
