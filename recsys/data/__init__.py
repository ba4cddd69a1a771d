"""Input data: synthetic weekly logs and loaders for the MovieLens datasets, landed into the raw lake."""
