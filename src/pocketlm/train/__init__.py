"""The training stage: one trainer (schedules, accumulation, checkpoints, exact resume, DDP/FSDP2) and
the recipes on it: phased pre-training, chat SFT and LoRA."""
