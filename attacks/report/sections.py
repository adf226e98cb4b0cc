"""The report sections of the studies a run holds: calibration, worst case (outliers), OOD non-members."""

from __future__ import annotations

from farm.storage import RunDir


def study_sections(run: RunDir) -> list[tuple[str, str]]:
    """(title, html) for every study found under <run>/studies/."""
    from attacks.report.defenses import report_sections as defense_sections
    from attacks.report.studies import study_sections as beyond_average_sections
    from attacks.studies.calibration import calibration_section

    section = calibration_section(run)
    return ([section] if section is not None else []) + beyond_average_sections(run) + defense_sections(run)
