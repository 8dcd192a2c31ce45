"""Datasets, readers and transforms. Each dataset file registers its datasets; `dlforge.catalog` imports them all."""
