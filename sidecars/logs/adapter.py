"""``sidecars log-adapter``: inputs -> processor -> buffer -> outputs, and the admin server.

Stop (SIGTERM, SIGINT, or end of stdin when stdin is the only input): inputs stop reading and
accepting, the processor flushes what it holds, every output delivers what is buffered within
``SIDECAR_DRAIN_TIMEOUT``, offsets and cursors are saved, exit 0. What an output could not
deliver in time stays in the disk buffer for the next start (with the memory buffer it is
counted as dropped, reason ``drain_timeout``). An output that can never deliver again (stdout's
reader went away) stops the process with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import select
import time
from typing import Any
from urllib.parse import urlsplit

from sidecars import admin
from sidecars.logs import build_kind
from sidecars.logs.buffer import MemoryBuffer, RecordBuffer
from sidecars.logs.disk_buffer import DiskBuffer
from sidecars.logs.ecs import fetch_ecs_metadata
from sidecars.logs.pipeline import Pipeline
from sidecars.logs.processor import LogProcessor
from sidecars.logs.record_metrics import RecordMetrics
from sidecars.logs.sinks import OutputClosed, Sink
from sidecars.logs.sinks.delivery import OutputDelivery
from sidecars.logs.sinks.emf import EmfReporter
from sidecars.logs.sinks.file import FileSink, path_from_url
from sidecars.logs.sinks.forward import ForwardSink
from sidecars.logs.sinks.stdout import StdoutSink
from sidecars.logs.sources import Source
from sidecars.logs.sources.forward import ForwardSource
from sidecars.logs.sources.stdin import StdinSource
from sidecars.logs.sources.syslog import SyslogSource
from sidecars.logs.sources.tail import TailSource
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger
from sidecars.runtime import Lifecycle
from sidecars.settings import LogAdapterSettings, to_json_dict

IDLE_FLUSH_SECONDS = 0.1
EMF_STREAM = "logadapter-emf"
CHECKPOINT_SECONDS = 1.0
log = get_logger("sidecars.logs.adapter")


GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Every batch makes tens of thousands of short-lived dicts and tuples (records, parsed
    fields) that live until the batch is buffered. With the default threshold (700) the
    collector runs every ~100 lines and walks them, and its full collections walk every
    object of the libraries loaded at start. Those are frozen out of its sight once started,
    and the young generation is collected every ~50,000 allocations instead: records hold no
    reference cycles, so there is little for it to find anyway."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class OutputFailed(RuntimeError):
    """An output stopped for good; the process exits 1 after draining the others."""


def output_names(settings: LogAdapterSettings) -> list[str]:
    names = list(dict.fromkeys(settings.outputs))
    if len(names) != len(settings.outputs):
        log.warn("duplicate_outputs_ignored", outputs=list(settings.outputs))
    return names


def build_buffer(settings: LogAdapterSettings, outputs: list[str]) -> RecordBuffer:
    if settings.buffer_dir is None:
        return MemoryBuffer(outputs, settings.buffer_max)
    buffer = DiskBuffer(settings.buffer_dir, outputs, settings.buffer_max)
    buffer.open()
    return buffer


def build_sink(output: str, settings: LogAdapterSettings, *, emf: bool = False) -> Sink:
    if output == "stdout":
        return StdoutSink()
    if output.startswith("file://"):
        return FileSink(output, path_from_url(output), fsync=settings.buffer_dir is not None)
    remote = settings.remote
    if output.startswith(("http://", "https://")):
        from sidecars.logs.sinks.ndjson import NdjsonSink  # noqa: PLC0415 (the 'http' extra)

        return NdjsonSink(output, remote.http_headers, gzip_body=remote.http_compression == "gzip")
    if output.startswith("otlp+"):
        from sidecars.logs.sinks.otlp import OtlpSink  # noqa: PLC0415 (the optional 'otlp' extra)

        return OtlpSink(output, remote)
    if output.startswith("cloudwatch://"):
        from sidecars.logs.sinks.cloudwatch import (  # noqa: PLC0415 (the 'cloudwatch' extra)
            CloudWatchSink,
        )

        return CloudWatchSink(output, remote, emf=emf)
    parts = urlsplit(output)
    assert parts.hostname is not None and parts.port is not None  # validated by settings
    return ForwardSink(output, parts.hostname, parts.port, settings.forward_shared_key)


def build_emf_reporter(settings: LogAdapterSettings, metrics: RecordMetrics) -> EmfReporter | None:
    """EMF records to ``LOGADAPTER_EMF_OUTPUT``: a sink of their own (named ``emf <output>``),
    into a CloudWatch stream of their own."""
    namespace, output = settings.remote.emf_namespace, settings.remote.emf_output
    if namespace is None or output is None:
        return None
    remote = dataclasses.replace(settings.remote, cloudwatch_stream=EMF_STREAM)
    sink = build_sink(output, dataclasses.replace(settings, remote=remote), emf=True)
    sink.name = f"emf {output}"
    if output == "stdout":
        # Beside the records' own stdout writer: writes up to PIPE_BUF never interleave.
        sink.max_batch_bytes = select.PIPE_BUF
    return EmfReporter(namespace, sink, metrics)


def build_sources(settings: LogAdapterSettings, pipeline: Pipeline) -> list[Source]:
    sources: list[Source] = []
    for name in dict.fromkeys(settings.inputs):
        if name == "stdin":
            sources.append(StdinSource(pipeline, settings.line_hard_cap))
        elif name == "tail":
            sources.append(
                TailSource(
                    settings.tail_paths, pipeline, settings.line_hard_cap, settings.state_dir
                )
            )
        elif name == "forward":
            sources.append(
                ForwardSource(
                    settings.forward_listen,
                    settings.forward_shared_key,
                    pipeline,
                    handshake_timeout=settings.forward_handshake_timeout,
                    idle_timeout=settings.forward_idle_timeout,
                )
            )
        elif name == "syslog":
            sources.append(SyslogSource(settings.syslog_listen, pipeline, settings.line_hard_cap))
    return sources


class LogAdapter:
    def __init__(
        self,
        settings: LogAdapterSettings,
        lifecycle: Lifecycle,
        pipeline: Pipeline,
        sources: list[Source],
        deliveries: list[OutputDelivery],
        *,
        emf: EmfReporter | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.pipeline = pipeline
        self.buffer = pipeline.buffer
        self.sources = sources
        self.deliveries = deliveries
        self.emf = emf
        self._delivery_tasks: dict[asyncio.Task[None], OutputDelivery] = {}
        self._failed_outputs: list[str] = []

    async def run(self) -> None:
        admin_server = admin.AdminServer(
            self.lifecycle, self.status, {}, self.settings.common.admin_token
        )
        await admin_server.start(self.settings.common.admin_listen)
        maintenance: asyncio.Task[None] | None = None
        try:
            for source in self.sources:
                await source.start()
            for delivery in self.deliveries:
                task = asyncio.create_task(delivery.run(), name=f"output {delivery.sink.name}")
                task.add_done_callback(self._delivery_ended)
                self._delivery_tasks[task] = delivery
            if self.emf is not None:
                self.emf.start()
            maintenance = asyncio.create_task(self._maintain(), name="maintenance")
            stdin_eof = self._watch_stdin()
            tune_garbage_collector()
            self.lifecycle.serving()
            await self.lifecycle.stop_requested.wait()
            if stdin_eof is not None:
                stdin_eof.cancel()
            await self._drain(maintenance)
        finally:
            if maintenance is not None:
                maintenance.cancel()
            await admin_server.close()
        if self._failed_outputs:
            raise OutputFailed(f"outputs failed: {', '.join(self._failed_outputs)}")

    def _watch_stdin(self) -> asyncio.Task[None] | None:
        """With stdin as the only input, its end is the end of the work: drain and exit 0."""
        stdin = next((s for s in self.sources if isinstance(s, StdinSource)), None)
        if stdin is None or len(self.sources) > 1:
            return None

        async def stop_at_eof(source: StdinSource) -> None:
            await source.finished.wait()
            self.lifecycle.request_stop("stdin_eof")

        return asyncio.create_task(stop_at_eof(stdin), name="stdin-eof")

    def _delivery_ended(self, task: asyncio.Task[None]) -> None:
        delivery = self._delivery_tasks[task]
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        name = delivery.sink.name
        self._failed_outputs.append(name)
        if isinstance(error, OutputClosed):
            log.error("output_closed", output=name, error=str(error))
        else:
            log.error(
                "output_crashed",
                output=name,
                error=f"{type(error).__name__}: {error}",
                exc_info=error,
            )
        self.buffer.detach(name, "output_closed")
        self.lifecycle.request_stop("output_failed")

    async def _maintain(self) -> None:
        """Emit multi-line groups that went idle; persist disk-buffer cursors."""
        next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
        while True:
            await asyncio.sleep(IDLE_FLUSH_SECONDS)
            self.pipeline.flush_idle()
            if isinstance(self.buffer, DiskBuffer) and time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
                try:
                    await self.buffer.checkpoint()
                except OSError as error:
                    log.error("buffer_checkpoint_failed", error=str(error))

    async def _drain(self, maintenance: asyncio.Task[None]) -> None:
        started = time.monotonic()
        deadline = started + self.settings.common.drain_timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.0)

        stops = asyncio.gather(*(source.stop() for source in self.sources))
        try:
            await asyncio.wait_for(stops, remaining())
        except TimeoutError:
            log.warn("inputs_stop_timeout", timeout=self.settings.common.drain_timeout)
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        self.pipeline.flush()
        self.buffer.close_input()
        if self.emf is not None:
            await self.emf.stop(remaining())
        pending = [task for task in self._delivery_tasks if not task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=remaining())
            if late:
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
                self._report_undelivered()
        for source in self.sources:
            await source.close()
        await self.buffer.close()
        for delivery in self.deliveries:
            await delivery.sink.close()
        log.info(
            "drained",
            seconds=round(time.monotonic() - started, 3),
            delivered={d.sink.name: d.delivered for d in self.deliveries},
        )

    def _report_undelivered(self) -> None:
        undelivered = {d.sink.name: self.buffer.pending(d.sink.name) for d in self.deliveries}
        if isinstance(self.buffer, DiskBuffer):
            log.warn(
                "drain_timeout_kept_on_disk",
                undelivered=undelivered,
                directory=str(self.buffer.directory),
            )
            return
        LOG_RECORDS_DROPPED.labels("drain_timeout").inc(self.buffer.records)
        log.error("drain_timeout_records_dropped", undelivered=undelivered)

    def status(self) -> dict[str, Any]:
        inputs = {source.name: source.status() for source in self.sources}
        return {
            "settings": to_json_dict(self.settings),
            "build": build_kind(),
            "inputs": inputs,
            "outputs": {d.sink.name: d.status() for d in self.deliveries},
            "buffer": self.buffer.status(),
            "processor": {
                "pending_lines": self.pipeline.processor.pending_lines,
                **self.pipeline.processor.totals,
            },
            "offsets": inputs.get("tail", {}).get("files", []),
            "emf": self.emf.status() if self.emf is not None else None,
        }


async def serve(settings: LogAdapterSettings, lifecycle: Lifecycle) -> None:
    static_fields: dict[str, Any] = {}
    if settings.ecs_metadata_uri:
        static_fields = await fetch_ecs_metadata(settings.ecs_metadata_uri)
    outputs = output_names(settings)
    processor = LogProcessor(settings, static_fields=static_fields or None)
    pipeline = Pipeline(processor, build_buffer(settings, outputs))
    deliveries = [
        OutputDelivery(build_sink(output, settings), pipeline.buffer) for output in outputs
    ]
    emf = build_emf_reporter(settings, pipeline.record_metrics)
    adapter = LogAdapter(
        settings, lifecycle, pipeline, build_sources(settings, pipeline), deliveries, emf=emf
    )
    await adapter.run()
