"""Analysis of trained runs: layer responses (Fig. 7) and run aggregation."""
