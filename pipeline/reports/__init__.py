"""Reports from runs: figures, the sweep comparison, the reproduction report, the summary."""
