"""Input data: synthetic and MovieLens sources, CSV exports, weekly ingest and training-window preparation."""
