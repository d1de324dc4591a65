"""Training: stages 0-2 and the baselines as specs (stage_specs.py), the loop, rewards, evaluation, checkpoints."""
