"""bytes -> Polars tables. Vectorised bulk paths; construct for headers and validation."""
