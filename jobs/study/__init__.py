"""The studies on trained runs, one module each, as `shadowfarm study STUDY` names them: calibration
(calibration.py), worst-case (worst_case.py), ood (ood.py), defenses (defenses.py). Each runs alone as
`python -m jobs.study.<module> [--smoke-test]`, or as `python -m jobs.study STUDY ...` (__main__.py)."""
