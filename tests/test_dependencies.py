"""Declared dependency floors cover the APIs the code calls."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("farm", "attacks", "jobs")
NUMPY_2_ONLY = re.compile(r"\b(np|numpy)\.trapezoid\b")  # np.trapz was renamed np.trapezoid in NumPy 2.0


def _floor(requirement: Requirement) -> Version:
    """The lowest version the requirement allows (0 when it sets no lower bound)."""
    lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", ">", "==", "~=", "===")]
    return max(lows, default=Version("0"))


def _declared(name: str) -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(d) for d in dependencies if Requirement(d).name == name]
    return requirement


def test_numpy_floor_allows_np_trapezoid():
    users = [str(p.relative_to(ROOT)) for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
             if NUMPY_2_ONLY.search(p.read_text())]
    floor = _floor(_declared("numpy"))
    assert not users or floor >= Version("2.0"), f"{users} call np.trapezoid (NumPy >= 2.0) but numpy floor is {floor}"
