from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs more examples than a developer's quick run; both are deterministic
# (derandomize) so a failure reproduces from the same seed.
settings.register_profile(
    "ci", max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
