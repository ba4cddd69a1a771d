"""The `recsys` command line."""
