"""The registry of the report's study sections: `SECTIONS = {name: fn(run) -> (title, html) | None}`.

Each fn reads its study's file under <run>/studies/ (writing its figure next to report/index.html, if it has
one) and returns None when the study did not run. `attacks.report.page.write_report` calls every one, in this
order, between the run's own sections and Provenance. One module per section: a new study adds its module
and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from attacks.report.calibration import calibration_section
from attacks.report.defense_matrix import defenses_section
from attacks.report.markup import Section
from attacks.report.ood import ood_section
from attacks.report.queries import queries_section
from attacks.report.worst_case import worst_case_section
from farm.storage import RunDir

SECTIONS: dict[str, Callable[[RunDir], Section | None]] = {
    "calibration": calibration_section,
    "worst_case": worst_case_section,
    "ood": ood_section,
    "defenses": defenses_section,
    "queries": queries_section,
}


def study_sections(run: RunDir) -> list[Section]:
    """(title, html) of every registered section with something to show for `run`, in registry order."""
    return [section for fn in SECTIONS.values() if (section := fn(run)) is not None]
