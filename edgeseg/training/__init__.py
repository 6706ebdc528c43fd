"""Training: the plan (plan.py: data, augmentation, schedule) and the trainer (trainer.py)."""
