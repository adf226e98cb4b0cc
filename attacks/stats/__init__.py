"""Pure statistics of the attack stage: arrays in, numbers out. No Ray, no HTTP, no I/O."""
