"""Data sources: dataset importers and the WebDataset shard writer."""
