"""The report sections of the studies a run holds (calibration; more as studies are added)."""

from __future__ import annotations

from farm.storage import RunDir


def study_sections(run: RunDir) -> list[tuple[str, str]]:
    """(title, html) for every study found under <run>/studies/."""
    from attacks.study_calibration import calibration_section

    sections = []
    for make in (calibration_section,):
        section = make(run)
        if section is not None:
            sections.append(section)
    return sections
