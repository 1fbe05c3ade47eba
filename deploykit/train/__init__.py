"""Training: fine-tuning loop and distillation, pruning schedules, torchrun/DDP, resumable checkpoints."""
