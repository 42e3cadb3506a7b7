"""Sharing and checking results: a logged run's commit checked out with its data
(`checkout`), retrained and compared with what the run logged (`verify`)."""
