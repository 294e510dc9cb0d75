"""Settings that are valid but put data at risk: one warning line each,
naming the keys, their values and what to set instead.

A configuration error stops start-up; these do not, because the setting
can be what an operator means (a registry nobody pushes to while it
collects).  ``twistd registryd`` logs them at start-up and ``registryd
check-config`` prints them, so the operator reads them before a push loses
its layers.
"""

import attr

from registryd.config.admin import GCConfig
from registryd.config.types import format_go_duration

#: The shortest ``gc.graceperiod`` scheduled collections are quiet about,
#: in seconds.  A blob a push has uploaded but no manifest names yet is
#: kept by the grace period alone (the push guard covers only the requests
#: in flight): the period must outlast a whole push, from its first blob
#: to its manifest.  Ten minutes is what a few GiB of layers take at
#: ~10 MB/s, the rate ``docker push`` reaches while it gzips; a push over a
#: slower link needs more, which is why the default is an hour.
SAFE_SCHEDULED_GRACE_PERIOD = 600.0


def config_advice(config):
    """The warnings for ``config`` (a :class:`registryd.config.Config`), one
    line each, in key order; empty when nothing is risky."""
    advice = []
    gc = config.gc
    default = attr.fields(GCConfig).grace_period.default
    if gc.interval is not None and gc.grace_period < SAFE_SCHEDULED_GRACE_PERIOD:
        advice.append(
            f"gc.graceperiod {_shown(gc.grace_period)} with gc.interval {_shown(gc.interval)}: "
            f"a scheduled collection can remove the blobs a push in progress uploaded more "
            f"than {_shown(gc.grace_period)} before its manifest; set gc.graceperiod to at "
            f"least {_shown(SAFE_SCHEDULED_GRACE_PERIOD)}, longer than the slowest push "
            f"(default {_shown(default)})"
        )
    return tuple(advice)


def _shown(seconds):
    return format_go_duration(seconds) if seconds else "0s"
