"""shadowfarm stage 1: the farm of shadow models (data, membership, models, training, queries, shards).

Flat, and below the attack stage: farm/ never imports attacks/ or jobs/ (tests/test_architecture.py).
"""
