"""Targets as label oracles (DESIGN §5): the contract (base), a run's model or a TorchScript file (model),
a deployed model over HTTP (http_client, protocol, journal), the label-only server (server), and the
output-side defenses that mask confidences (output_defenses, memguard)."""
