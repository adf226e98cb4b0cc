"""Studies on a trained run (or on several farms): each replays the attack stage's game and writes studies/*."""
