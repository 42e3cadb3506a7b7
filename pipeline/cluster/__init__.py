"""Clusters a sweep's jobs run on: Slurm's controller and queue, seen from the launching host."""
