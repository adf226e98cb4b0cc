"""The registered attacks (attacks.registry): fn(responses, *, target, shadows, **settings) -> float64[N].

Pure like attacks.stats: statistics that need model access (boundary distances, transfer losses) are
computed first by attacks.compute and read here from `responses.statistics`.
"""
