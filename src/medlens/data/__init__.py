"""Data: dataset sources, preparation into the shared parquet contract, splits and chat format."""
