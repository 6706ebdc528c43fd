"""Training: what a run depends on (config.py), its step plan and pace (plan.py), the loop (loop.py) and the runs
that make or fine-tune a checkpoint (trainer.py)."""
