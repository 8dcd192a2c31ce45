"""The model zoo, one architecture per file. Each file registers its models; `dlforge.catalog` imports them all."""
