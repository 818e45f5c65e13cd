"""Training: the run specification, the paper's schedule, the loop, checkpoints and run directories."""
