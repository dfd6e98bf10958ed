"""Training: losses per model family, the trainer, self-distillation, RepOptimizer, EMA and schedules."""
