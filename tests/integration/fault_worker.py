"""``audioproc worker`` with a delay injected, for tests/integration/test_worker_faults.py only.

The production code has no such hook: this module patches it before starting the real worker
(``app.cli.main(["worker", ...])``), so a test can kill the process at a known point of a job.

Environment:
    FAULT_SLEEP_S: how long to stall, seconds (default 60).
    FAULT_AT: ``pipeline`` — inside the pipeline run, before any result exists (default);
        ``before_done`` — after the result is stored, before the job is marked done and acked.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from app.pipeline.runner import Pipeline
from app.services.jobs import RedisJobStore

SLEEP_S = float(os.environ.get("FAULT_SLEEP_S", "60"))
FAULT_AT = os.environ.get("FAULT_AT", "pipeline")


def _patch() -> None:
    if FAULT_AT == "pipeline":
        run_batch = Pipeline.run_batch

        def slow_run_batch(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
            time.sleep(SLEEP_S)
            return run_batch(self, *args, **kwargs)

        Pipeline.run_batch = slow_run_batch  # type: ignore[method-assign]
    elif FAULT_AT == "before_done":
        update = RedisJobStore.update

        async def slow_update(self: RedisJobStore, job_id: str, changes: dict[str, Any]) -> None:
            if changes.get("status") == "done":
                await asyncio.sleep(SLEEP_S)
            await update(self, job_id, changes)

        RedisJobStore.update = slow_update  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown FAULT_AT={FAULT_AT!r}")


if __name__ == "__main__":
    from app.cli import main

    _patch()
    sys.exit(main(sys.argv[1:]))
