"""Training helpers as plain functions: checkpoints, optimizer groups, schedules, early stopping, loops."""
