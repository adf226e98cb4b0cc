"""`shadowfarm tune`: Ray Tune search of an attack's settings on a shadow-only game (`trials`), the trial
scheduling that keeps it reproducible (`search`), and `--tuned`: what it chose, checked before use (`tuned`).
The search spaces are on the attacks' specs (`attacks.spec.AttackSpec.tune`). Importing this package imports
nothing: `attacks.tune.tuned` stays free of Ray."""
