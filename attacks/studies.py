"""The report sections of the studies a run holds: calibration, worst case (outliers), OOD non-members."""

from __future__ import annotations

from farm.storage import RunDir


def study_sections(run: RunDir) -> list[tuple[str, str]]:
    """(title, html) for every study found under <run>/studies/."""
    from attacks.defense_report import report_sections as defense_sections
    from attacks.study_calibration import calibration_section
    from attacks.study_report import study_sections as beyond_average_sections

    section = calibration_section(run)
    return ([section] if section is not None else []) + beyond_average_sections(run) + defense_sections(run)
