"""Training: the loop and what it steps.

    trainer   the Trainer behind train.py: set-up, epochs, accumulation per nbs images, validation, checkpoints
    optim     YOLOv5's three parameter groups for SGD, Adam, AdamW
    schedule  learning-rate schedules and warm-up ramps
    ema       the exponential moving average of the weights
"""
