"""Experiments: A/B statistics, the feedback log and simulated users."""
