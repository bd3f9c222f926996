"""``sidecars demo``: the example stack as local processes, driven through scripted failures.

The example app, two flaky dependencies, the breaker, the ambassador and the log adapter run
as the real ``python -m ...`` commands on 127.0.0.1:18000-18999; the demo sends orders, flips
the dependencies healthy -> blips -> outage -> recovery, and prints what the sidecars do.
"""

from sidecars.demo.runner import main

__all__ = ["main"]
