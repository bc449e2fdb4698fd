"""The seed of this session's random draw from the scenario matrix, shared by the tests and the report header.

``TRAINWRIGHT_SCENARIO_SEED`` repeats an earlier draw; otherwise every session draws anew.
"""

from __future__ import annotations

import os
import random

SEED = int(os.environ.get("TRAINWRIGHT_SCENARIO_SEED") or random.SystemRandom().randrange(10**6))
