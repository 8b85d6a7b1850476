"""The local instance's run launcher: Dagster's own, plus a health check that sees dead runs.

Dagster's DefaultRunLauncher has no run worker health check (`supports_check_run_worker_health`
is False in dagster/_core/launcher/base.py), so the daemon's run monitoring
(dagster/_daemon/monitoring/run_monitoring.py, `monitor_started_run`) skips a STARTED run whose
process has died: it stays STARTED and keeps its pool slots. Only a live code server notices the
death of a run process it started itself (dagster/_grpc/server.py, `_check_for_orphaned_runs`);
a run executed in process (`make demo`), or one whose code server died with it, has nobody.
This launcher reads the run's process from the run's own events and checks that it still runs.
"""

from __future__ import annotations

import dataclasses

import dagster as dg

# Not exported by `dagster`: the launcher interface the instance's `run_launcher` implements.
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

from gpu_analysis.processes import process_running


@dataclasses.dataclass(frozen=True)
class RunProcess:
    pid: int
    reported_at_epoch_s: float  # when the run reported it: the process had started by then


def run_process(instance: dg.DagsterInstance, run_id: str) -> RunProcess | None:
    """The local process executing a run, as its engine events last named it; None until then.

    Dagster names it in run-level engine events with a `pid` entry: "Started process for run"
    (dagster/_grpc/impl.py, dagster/_cli/api.py), "Executing steps in process"
    (_core/executor/in_process.py) and "Executing steps using multiprocess executor: parent
    process" (_core/executor/multiprocess.py). A multiprocess step's own process reports with its
    step key, so it is not taken for the run's.
    """
    found = None
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or entry.step_key is not None:
            continue
        pid = event.engine_event_data.metadata.get("pid")
        if pid is not None and str(pid.value).isdigit():
            found = RunProcess(int(pid.value), entry.timestamp)
    return found


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose health check fails a run whose process is gone from this host.

    Set as `run_launcher` in dagster.yaml: the local profile runs everything on one machine, so
    the daemon can see every run's process.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        found = run_process(self._instance, run.run_id)
        if found is None:
            # Between RUN_START and the executor's first event: no verdict, never a failure.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run process reported yet")
        if process_running(found.pid, started_by_epoch_s=found.reported_at_epoch_s):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run's process {found.pid} is gone (killed, crashed, or the machine restarted)",
        )
