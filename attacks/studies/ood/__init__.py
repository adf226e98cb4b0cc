"""Out-of-distribution non-members (Hintersdorf et al.): the inputs, the models' answers, the study."""
