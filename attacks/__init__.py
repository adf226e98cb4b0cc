"""shadowfarm stage 2: label-only membership inference attacks calibrated on shadow models.

The top level is the stage's orchestration: `runner` (shadowfarm attack), `tune`, `audit`, the attack
`registry`, `loader` and `responses` (shards -> arrays) and `artifacts` (every attack-stage path and schema).
The packages below it, by what they may touch:

- `stats/`    pure statistics: correctness counts, LiRA fits, metrics, the shadow game (`play`);
- `methods/`  the registered attacks, pure: arrays in, scores out;
- `compute/`  Ray tasks that need models: HopSkipJump, boundary distances, re-queries, transfer models;
- `oracles/`  targets as label oracles: run models, TorchScript, HTTP client and server, output defenses;
- `studies/`  calibration (shadow count), worst case, OOD non-members, the defense matrix;
- `report/`   the terminal tables, plots and report/index.html, one module per section.

stats/ and methods/ import no Ray, HTTP or file I/O (tests/test_architecture.py checks it).
"""
