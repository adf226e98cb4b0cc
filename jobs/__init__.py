"""The entry points: one module per `shadowfarm` COMMAND, each also runnable as `python -m jobs.<module>`
(options as flags, `--run RUN`; `--smoke-test` where the job reads or trains a farm).

    train.py  verify.py  attack.py  tune.py  report.py  serve.py  audit.py  export_mlserver.py
    study/    calibration.py  worst_case.py  ood.py  defenses.py   (`shadowfarm study STUDY`)
    cli.py    `shadowfarm` itself; quickstart.py: `make demo`
    common.py, smoke.py: what the jobs share (job_main, --smoke-test's farm); bench/: the benchmarks
"""
