"""Batch analysis on a Dask cluster: the same :class:`~strokescan.app.batch.BatchItem` stream as the embedded
:class:`~strokescan.app.batch.BatchRunner`, one Dask task per scan (docs/batch.md)::

    runner = DaskBatchRunner(PredictorOptions(segment=True), masks_dir="masks", workers=2)
    for item in runner.run(["scan1.zip", "folder_of_scans/"]):
        print(item.error or item.result.probability)

``workers=N`` starts a :class:`~distributed.LocalCluster` on 127.0.0.1 (N processes, one thread each, no
dashboard) that stops with the run; ``scheduler="tcp://host:8786"`` uses a running cluster instead. Each worker
builds its Predictor once, in a worker plugin, and keeps it for the run. The client finds the scans and names
their output files; a worker loads the scan, analyses it, writes its masks/overlays/heat maps and sends back
the result without arrays. Inputs and output folders must be on a file system that the workers share.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from distributed import Client, Future, KilledWorker, LocalCluster, WorkerPlugin, as_completed, get_worker
from distributed.worker import Worker
from tqdm import tqdm

from strokescan.app.batch import BatchItem, BatchRunner, PredictorOptions, find_targets, output_stem
from strokescan.errors import StrokescanError

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"  # a local cluster listens on the loopback interface only
#: Dask's scheduler always serves /health and /metrics over HTTP (the dashboard stays off): on a free loopback port
LOCAL_HTTP_ADDRESS = f"{LOCAL_HOST}:0"
THREADS_PER_WORKER = 1  # one scan at a time per worker process: its Predictor runs torch with its own threads
SCHEDULER_CONNECT_TIMEOUT_S = 10  # --scheduler: how long to try to reach it
WAIT_FOR_WORKERS_S = 60  # --scheduler: how long to wait for a first worker to join
PLUGIN_PREFIX = "strokescan-predictor"  # one plugin per run: "<prefix>-<run id>"
#: Dask's own log lines (worker restarts, slow event loops) below this level are dropped unless -v was given
CLUSTER_LOG_LEVEL = logging.ERROR
DASK_LOGGERS = ("distributed", "dask", "tornado", "bokeh")  # the loggers CLUSTER_LOG_LEVEL applies to
#: what a cluster failure looks like on the client: Dask gave up on a task, or the scheduler went away
CLUSTER_FAILURES = (KilledWorker, asyncio.CancelledError, OSError, asyncio.TimeoutError)


@contextmanager
def _dask_logs_at(level: int) -> Iterator[None]:
    """Drop Dask's log lines in this process below ``level`` for a while (its loggers propagate to the CLI's
    handler; ``silence_logs`` only quiets the handlers Dask adds itself, as in its worker processes)."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.split(".")[0] in DASK_LOGGERS]
    old_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, old_levels):
            logger.setLevel(old)


def local_cluster(n_workers: int, log_level: int = CLUSTER_LOG_LEVEL) -> LocalCluster:
    """A cluster on this machine as ``workers=`` starts it: ``n_workers`` processes of one thread, everything on
    127.0.0.1, no dashboard; Dask's log lines below ``log_level`` dropped in its worker processes."""
    return LocalCluster(n_workers=n_workers, threads_per_worker=THREADS_PER_WORKER, processes=True, host=LOCAL_HOST,
                        dashboard_address=None, worker_dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": LOCAL_HTTP_ADDRESS}, silence_logs=log_level)


class ClusterError(StrokescanError):
    """The Dask cluster cannot be reached, or it gave up on a task (its worker died too often)."""


class PredictorPlugin(WorkerPlugin):
    """Builds one :class:`BatchRunner` (and so one Predictor) per worker when the plugin is registered or the
    worker joins, and keeps it for every scan of the run."""

    def __init__(self, options: PredictorOptions, runner_settings: dict[str, Any]) -> None:
        self.options = options
        self.runner_settings = runner_settings
        self.runner: BatchRunner | None = None

    async def setup(self, worker: Worker) -> None:
        """Load the models in a thread, so that the worker keeps answering the scheduler meanwhile."""
        self.runner = await asyncio.get_running_loop().run_in_executor(None, self._build_runner)

    def _build_runner(self) -> BatchRunner:
        return BatchRunner(self.options.build(), **self.runner_settings)

    def teardown(self, worker: Worker) -> None:
        self.runner = None


def analyse_on_worker(plugin_name: str, shown: str, path: Path, stem: str | None) -> BatchItem:
    """The task: analyse one scan with this worker's runner and write its files; return it without arrays."""
    plugin = get_worker().plugins[plugin_name]
    assert isinstance(plugin, PredictorPlugin) and plugin.runner is not None
    try:
        return plugin.runner.analyse(shown, path, stem=stem).without_arrays()
    except StrokescanError as exc:
        return BatchItem(shown, error=exc)


class DaskBatchRunner:
    """Like :class:`BatchRunner` (same arguments, but the Predictor's options instead of a Predictor), on a Dask
    cluster: ``workers`` (>= 1) local worker processes, or the running cluster at ``scheduler``. Items come in
    input order; their results carry no masks or heat maps (those are in the files written)."""

    def __init__(self, options: PredictorOptions, masks_dir: Path | str | None = None,
                 overlays_dir: Path | str | None = None, series: str | None = None, force: bool = False,
                 progress: bool = False, heatmaps_dir: Path | str | None = None, workers: int | None = None,
                 scheduler: str | None = None) -> None:
        if (workers is None) == (scheduler is None):
            raise ValueError("give either workers (a local cluster) or scheduler (a running one)")
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        if (masks_dir or overlays_dir) and not (options.segment or options.segmenter_dir):
            raise ValueError("masks or overlays need a Predictor with a segmenter")
        self.options = options
        self.workers = workers
        self.scheduler = scheduler
        self.progress = progress
        self.runner_settings: dict[str, Any] = {
            "masks_dir": self._where(masks_dir) if masks_dir else None,
            "overlays_dir": self._where(overlays_dir) if overlays_dir else None,
            "heatmaps_dir": self._where(heatmaps_dir) if heatmaps_dir else None,
            "series": series, "force": force}

    def _where(self, path: Path | str) -> Path:
        """``path`` as the workers need it: as given for local workers (they share this working folder),
        absolute for a running cluster's (theirs may differ)."""
        return Path(path).resolve() if self.scheduler else Path(path)

    @property
    def writes_files(self) -> bool:
        return any(self.runner_settings[k] for k in ("masks_dir", "overlays_dir", "heatmaps_dir"))

    def run(self, inputs: Sequence[str]) -> Iterator[BatchItem]:
        """One :class:`BatchItem` per scan found, in input order; an error stops only its own input. Raises
        :class:`ClusterError` when the cluster cannot be reached or gives up on a scan, after yielding every
        item that had finished."""
        targets = [(shown, target if isinstance(target, StrokescanError) else self._where(target))
                   for shown, target in find_targets(inputs)]
        finished: dict[int, BatchItem] = {i: BatchItem(shown, error=target) for i, (shown, target)
                                          in enumerate(targets) if isinstance(target, StrokescanError)}
        stems: set[str] = set()
        to_analyse = [(i, shown, target, output_stem(target, stems) if self.writes_files else None)
                      for i, (shown, target) in enumerate(targets) if isinstance(target, Path)]
        next_index = 0
        failure: BaseException | None = None
        with self._client() as client:
            plugin_name = f"{PLUGIN_PREFIX}-{uuid.uuid4().hex}"
            futures: dict[Future, int] = {}
            bar = tqdm(total=len(targets), initial=len(finished), desc="analysing", unit="scan",
                       disable=not self.progress or len(targets) < 2)
            try:
                client.register_plugin(PredictorPlugin(self.options, self.runner_settings), name=plugin_name)
                futures = {client.submit(analyse_on_worker, plugin_name, shown, path, stem, pure=False,
                                         key=f"{plugin_name}-scan-{i}"): i for i, shown, path, stem in to_analyse}
                for future in as_completed(futures, loop=client.loop):
                    finished[futures[future]] = future.result()
                    bar.update()
                    while next_index in finished:
                        yield finished.pop(next_index)
                        next_index += 1
            except CLUSTER_FAILURES as exc:
                failure = exc
                for future, i in futures.items():
                    if future.status == "finished" and i >= next_index:  # done, not yet yielded
                        with suppress(*CLUSTER_FAILURES):
                            finished[i] = future.result()
            finally:
                bar.close()
                with suppress(*CLUSTER_FAILURES):
                    client.cancel(list(futures))
                    client.unregister_worker_plugin(plugin_name)  # a running cluster's workers drop the models
        yield from (finished[i] for i in sorted(finished))  # finished before a failure; or input errors only
        if failure is not None:
            raise ClusterError(self._failure_message(failure, next_index + len(finished), len(targets))) from None

    @staticmethod
    def _failure_message(failure: BaseException, n_done: int, n_targets: int) -> str:
        what = ("a Dask worker died too often while analysing a scan (Dask gave up on it)"
                if isinstance(failure, KilledWorker) else f"the Dask cluster failed ({type(failure).__name__})")
        return f"{what}; {n_done} of {n_targets} inputs finished and were reported"

    @contextmanager
    def _client(self) -> Iterator[Client]:
        """A client of a new local cluster (closed with it) or of the running one at ``scheduler``."""
        quiet = logging.WARNING if log.isEnabledFor(logging.INFO) else CLUSTER_LOG_LEVEL
        with _dask_logs_at(quiet), self._connect(quiet) as client:
            yield client

    @contextmanager
    def _connect(self, quiet: int) -> Iterator[Client]:
        if self.workers is not None:
            with local_cluster(self.workers, quiet) as cluster, Client(cluster, set_as_default=False) as client:
                log.info("started a local Dask cluster: %d worker processes on %s", self.workers, LOCAL_HOST)
                yield client
            return
        try:
            client = Client(self.scheduler, timeout=SCHEDULER_CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler} within "
                               f"{SCHEDULER_CONNECT_TIMEOUT_S} s ({type(exc).__name__})") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            except (OSError, asyncio.TimeoutError):
                raise ClusterError(f"no Dask worker joined the scheduler at {self.scheduler} within "
                                   f"{WAIT_FOR_WORKERS_S} s") from None
            yield client
