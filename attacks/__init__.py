"""shadowfarm stage 2: label-only membership inference attacks calibrated on shadow models."""
