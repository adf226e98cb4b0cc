"""shadowfarm stage 1: the farm of shadow models (data, membership, models, training, queries, shards)."""
