"""The registered attacks (attacks.registry): fn(responses, *, target, shadows, **settings) -> float64[N].

Pure like attacks.stats: statistics that need model access (boundary distances, transfer losses, gradients) are
computed first by attacks.compute and read here from `responses.statistics`.

    attack                 file            what it computes
    gap                    correctness.py  clean label correct => member
    augmentation           correctness.py  correctness over flips/translations/rotations, classifier on shadows
    noise                  correctness.py  fraction correct under gaussian/bitflip noise (or a classifier)
    calibrated             calibrated.py   per-example LiRA of the fraction of correct perturbed queries;
                                           `calibrate`, the per-example calibration every calibrated attack shares
    transfer               transfer.py     true-label confidence/loss of models trained on the target's labels
    boundary               boundary.py     HopSkipJump distance to the decision boundary
    loss                   confidence.py   minus cross-entropy at the true label (logits)
    confidence_classifier  confidence.py   gradient-boosted attack model on confidences (logits)
    lira_confidence        confidence.py   LiRA on the logit-scaled true-label confidence (logits)
    gradient_norm          whitebox.py     norm of the loss gradient (weights)
    whitebox_classifier    whitebox.py     attack model on per-layer gradients and activations (weights)
    stolen_memories        whitebox.py     white-box evidence calibrated into P(member) (weights)

Adding an attack: its function in a file here, one `AttackSpec` in attacks/registry.py (with a module under
attacks/compute/ when it needs model access).
"""
