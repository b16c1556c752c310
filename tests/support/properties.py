"""Hypothesis settings of the property tests of the decision cores.

Bounded and derandomized: the same examples on every run, so a run is as fast
as the unit tests around it and a mutation run (``make mutation``) scores the
same twice. No example database: nothing is written beside the tests. Under
mutmut (``MUTANT_UNDER_TEST`` set) each test runs a quarter of its examples:
the first ones, which already kill what the full count kills on these modules.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_MUTATING = "MUTANT_UNDER_TEST" in os.environ
_SHARE = 4 if _MUTATING else 1
_PHASES = (Phase.explicit, Phase.generate) if _MUTATING else tuple(Phase)


def _bounded(examples: int) -> settings:
    return settings(max_examples=max(3, examples // _SHARE), deadline=None, derandomize=True, database=None,
                    phases=_PHASES, suppress_health_check=[HealthCheck.too_slow])


PROPERTIES = _bounded(150)
FEW = _bounded(40)  # the examples that drive an event loop
WIDE = _bounded(20)  # each example walks the whole price snapshot
PLANS = _bounded(80)  # each example plans over a made-up fleet
