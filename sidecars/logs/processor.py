"""The log adapter's processing core: LogLines in, records out.

Partial reassembly -> multiline grouping (per stream) -> parse -> normalise -> redact.
Sans-IO: no sockets, no files, no asyncio; the clock is injected, so idle flushing is
driven by the caller (``flush_idle`` every ~100 ms) and tested without sleeping.

A stream is ``(LogLine.stream_key, stream name)``: stdout and stderr of one container (or of
one CRI file) are stitched and grouped apart. What one stream holds pending
(``pending.StreamState``):

- a partial line: CRI ``P`` parts, Docker json-file entries without their newline, Docker
  Forward records marked ``partial_message`` (stitched in arrival order until the last part;
  a part of another ``partial_id`` completes the one in progress);
- a group: the last line seen, with any lines that continue it (``multiline.classify``).
  A group is emitted when a line starts a new one, when the stream has been idle for
  ``multiline_timeout``, or at ``flush``.

A LogLine whose ``fields`` hold a ``log`` text is a Docker/FireLens record: ``log`` is the
line, ``source`` the stream, and fields other than the container and partial markers go to
``attributes``. A LogLine with other ``fields`` is a structured event, normalised like a
JSON line. Otherwise ``text`` is the line (``fields`` may carry only partial markers).

Limits: a line longer than ``max_line_bytes`` (after stitching) is cut into pieces of at
most that size, each its own record marked ``attributes.truncated = true`` and
``attributes.part = "i/n"`` (partial lines are stitched up to ``line_hard_cap``, the parts
past it make another line); a group reaching ``multiline_max_bytes`` is emitted marked
``truncated`` and its next lines start a new group (marked ``continued``). Both are counted
in ``logadapter_records_truncated_total`` and logged (at most once a minute per reason), as
are decoded objects cut at ``depth.MAX_DEPTH`` (``formats.json.load_object``, the Forward
input). Each record is made under a guard (``_add_single``): one that raises is dropped,
counted (``logadapter_records_dropped_total{reason="processor_error"}``) and logged; its
neighbours go on.

Speed: this runs for every line, so the common case (a line that starts a new group, the
previous one emitted as a one-line record) takes the shortest path, with a handful of
attribute reads and no call beyond parsing; counters go to Prometheus once per call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import orjson

from sidecars.logs import detect, multiline, normalise, stacktrace, timestamps
from sidecars.logs.counters import ProcessingCounters
from sidecars.logs.detect import LineParser, hinted_parser, line_parser
from sidecars.logs.formats import access, cri, docker, json
from sidecars.logs.model import LogLine, Record
from sidecars.logs.multiline import GO, HEAD, NONE, ORDINARY_STARTS
from sidecars.logs.pending import Group, Moment, Single, StreamState, byte_length, split_line
from sidecars.logs.redact import Redactor
from sidecars.settings import LogAdapterSettings

_PARTIAL_KEYS = frozenset({"partial_message", "partial_id", "partial_ordinal", "partial_last"})
_DOCKER_KEYS = frozenset({"log", "source", "container_id", "container_name", *_PARTIAL_KEYS})
_NO_KEYS: dict[str, Any] = {}
_NO_STREAM = StreamState("\0no stream")  # matches no line: the stream cache starts empty
_DIGITS = frozenset("0123456789")
_CAPITALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class LogProcessor:
    """Partial reassembly -> multiline grouping (per stream_key) -> parse -> normalise ->
    redact. Sans-IO: no sockets, no files, no asyncio; a clock is injected."""

    def __init__(
        self,
        settings: LogAdapterSettings,
        *,
        clock: Callable[[], float] = time.time,
        static_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self._clock = clock
        self._parse: LineParser = line_parser(settings.format)
        self._auto = self._parse is detect.detect
        forced = settings.format != "auto"
        # A format_hint (the syslog input says "syslog") overrides detection, not a forced
        # format.
        self._hinted: dict[str, LineParser] = {}
        for hint in () if forced else ("syslog", "json"):
            parser = hinted_parser(hint)
            if parser is not None:
                self._hinted[hint] = parser
        self._envelopes = settings.format in ("auto", "cri", "json")
        self._multiline = settings.multiline
        self._timeout = settings.multiline_timeout
        self._group_limit = settings.multiline_max_bytes
        self._line_limit = settings.max_line_bytes
        self._line_cap = settings.line_hard_cap
        # A str of at most limit/4 characters is at most limit UTF-8 bytes: no encoding needed.
        self._line_quick = settings.max_line_bytes // 4
        # The inlined common case applies to lines under that size, with multiline on.
        self._fast_limit = self._line_quick if settings.multiline else -1
        self._service = settings.service
        self._static = dict(static_fields or {})
        self._redactor = Redactor.from_spec(settings.redact)
        self._streams: dict[str, dict[str | None, StreamState]] = {}
        self._last_stream = _NO_STREAM  # the previous line's: consecutive lines share it
        self._last_key = ""
        self._received_at = -1.0
        self._received_text = ""
        self._run_like: LogLine | None = None
        self._run_head: Record = {}
        self._run_service: str | None = None
        self._run_time = ""
        self._now = clock()
        self._counters = ProcessingCounters(settings.max_line_bytes, settings.multiline_max_bytes)
        self._formats = self._counters.formats
        self.totals = self._counters.totals
        """Cumulative counters since start, for /status."""

    # -- the API ---------------------------------------------------------------------------

    def push(self, lines: Iterable[LogLine]) -> list[Record]:
        """Records completed by these lines (the last group of each stream stays pending)."""
        self._now = now = self._clock()
        batch = lines if isinstance(lines, list) else list(lines)
        out: list[Record] = []
        suspects = self._suspects(batch)
        if suspects:
            for index, line in enumerate(batch):
                self._accept(line, now, out, index in suspects)
        else:
            suspect = suspects is None
            for line in batch:
                self._accept(line, now, out, suspect)
        self._publish()
        return out

    def push_lines(
        self,
        texts: Sequence[str],
        like: LogLine,
        *,
        times: Sequence[float | None] | None = None,
        extra: dict[str, Any] | None = None,
        unwrap: bool = True,
    ) -> list[Record]:
        """``push`` for consecutive lines of one stream that differ only by their text: each
        line is ``like`` (its ``text`` ignored) with one of ``texts``. What stdin reads comes
        this way, and runs of Docker/FireLens records from the Forward input: no LogLine is
        made per line, and the common line is placed by the loop itself, with the stream's
        state in local variables. ``first_pending`` answers ``like`` for these lines (no
        offsets: an input that saves offsets pushes LogLines).

        ``times``: each line's time from its input (Forward event times), used like
        ``LogLine.timestamp`` when a line has no timestamp of its own. ``extra``: attributes
        for every record (the other keys of FireLens records). ``unwrap``: a line may be a
        CRI or Docker json-file envelope (False for the ``log`` text of a record, as
        ``push`` treats a LogLine with ``fields``)."""
        self._now = now = self._clock()
        if like.fields:
            return self.push([dataclasses.replace(like, text=text) for text in texts])
        out: list[Record] = []
        name = like.stream
        stream = self._stream(like.stream_key, name)
        stream.touched = now
        envelopes = unwrap and self._envelopes and like.format_hint is None
        fast_limit = self._fast_limit
        self._start_run(like, name)
        # The JSON lane of ``_emit_run``, inlined: JSON lines are the commonest of all. A
        # line of stdin is decoded here (it may be a Docker json-file envelope); a record's
        # text too, unless it may hold a secret (``_emit_single`` reads those).
        json_lane = not self._static
        json_texts = not envelopes and self._auto and like.format_hint is None
        service, plain_time, head = self._run_service, self._run_time, self._run_head
        json_records = 0
        pending = stream.single
        quiet = stream.partial is None and stream.group is None
        whens = times if times is not None else repeat(None)
        for text, suspect, when in zip(texts, self._suspect_flags(texts), whens, strict=False):
            first = text[:1]
            data = None
            if first == "{" and (envelopes or (json_texts and not suspect)):
                data = json.load_object(text)  # with "log": maybe a Docker json-file entry
                if data is not None and envelopes and "log" in data:
                    stream.single = pending
                    self._accept(dataclasses.replace(like, text=text), now, out, suspect)
                    pending = stream.single
                    quiet = stream.partial is None and stream.group is None
                    continue
            elif (
                envelopes and first in _DIGITS and text[4:5] == "-" and cri.unwrap(text) is not None
            ):
                stream.single = pending
                self._accept(dataclasses.replace(like, text=text), now, out, suspect)
                pending = stream.single
                quiet = stream.partial is None and stream.group is None
                continue
            if quiet and len(text) <= fast_limit and (
                first in ORDINARY_STARTS or _logfmt_start(text) or _capital_head(first, text)
            ):
                if pending is not None:
                    record = None
                    held, _, moment, held_data, held_extra, held_suspect = pending
                    if json_lane and held is like and held_data is not None and not held_suspect:
                        default_time = plain_time if moment is None else None
                        try:
                            record = normalise.schema_record(held_data, service, default_time, head)
                        except Exception:  # ``_add_run`` counts what fails
                            record = None
                    if record is None:
                        self._add_run(out, pending, name)
                    else:
                        if record["timestamp"] is None:  # the line's input time, then
                            record["timestamp"] = self._default_time(like, moment)
                        if held_extra:
                            record.setdefault("attributes", {}).update(held_extra)
                        json_records += 1
                        out.append(record)
                pending = (like, text, when, data, extra, suspect)
            else:
                stream.single = pending
                self._place(name, (like, text, when, data, extra, suspect), now, out)
                pending = stream.single
                quiet = stream.partial is None and stream.group is None
        stream.single = pending
        if json_records:
            self._formats["json"] += json_records
        self._publish()
        return out

    def _start_run(self, like: LogLine, name: str | None) -> None:
        """What ``_finish`` would make of every line of this run, for ``_emit_run``: the
        fields after ``service`` (stream, container), the service unless the line names it,
        the timestamp of a line without one."""
        self._run_like = like
        container_name = like.container_name
        if container_name:
            container_name = container_name.lstrip("/")
        head: Record = {}
        if name:
            head["stream"] = name
        if like.container_id:
            head["container_id"] = like.container_id
        if container_name:
            head["container_name"] = container_name
        self._run_head = head
        self._run_service = self._service or container_name or None
        self._run_time = self._default_time(like, None)

    def _suspect_flags(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether it may hold a secret (``Redactor.suspects``)."""
        if self._redactor is None:
            return [False] * len(texts)
        suspects = self._redactor.suspects(texts)
        if suspects is None:
            return [True] * len(texts)
        flags = [False] * len(texts)
        for index in suspects:
            flags[index] = True
        return flags

    def flush_idle(self) -> list[Record]:
        """Records of streams idle for longer than ``multiline_timeout``."""
        self._now = now = self._clock()
        deadline = now - self._timeout
        out: list[Record] = []
        for key, streams in list(self._streams.items()):
            for name, stream in list(streams.items()):
                if stream.touched <= deadline:
                    self._drain(stream, out)
                    del streams[name]
            if not streams:
                del self._streams[key]
        self._last_stream = _NO_STREAM
        self._publish()
        return out

    def flush_streams(self, stream_keys: Iterable[str]) -> list[Record]:
        """Every pending record of these stream keys (their sender closed its connection:
        nothing more will come to continue them)."""
        self._now = self._clock()
        out: list[Record] = []
        for key in stream_keys:
            for stream in self._streams.pop(key, {}).values():
                self._drain(stream, out)
        self._last_stream = _NO_STREAM
        self._publish()
        return out

    def flush(self) -> list[Record]:
        """Every pending record (EOF, shutdown)."""
        self._now = self._clock()
        out: list[Record] = []
        for streams in self._streams.values():
            for stream in streams.values():
                self._drain(stream, out)
        self._streams.clear()
        self._last_stream = _NO_STREAM
        self._publish()
        return out

    def first_pending(self, stream_key: str) -> LogLine | None:
        """The oldest line of ``stream_key`` not yet emitted in a record (by offset when the
        lines have offsets, else by arrival)."""
        oldest: LogLine | None = None
        for stream in self._streams.get(stream_key, {}).values():
            for line in (stream.partial_head, stream.oldest()):
                if line is not None and (oldest is None or _earlier(line, oldest)):
                    oldest = line
        return oldest

    @property
    def pending_lines(self) -> int:
        """Lines held in partial lines and groups, not yet in any record."""
        return sum(
            stream.lines for streams in self._streams.values() for stream in streams.values()
        )

    # -- reassembly and grouping -------------------------------------------------------------

    def _suspects(self, batch: list[LogLine]) -> set[int] | None:
        """Indexes of the lines whose text may hold a secret (``Redactor.suspects``); None:
        any may."""
        if self._redactor is None:
            return set()
        return self._redactor.suspects([line.text for line in batch])

    def _accept(self, line: LogLine, now: float, out: list[Record], suspect: bool) -> None:
        """One line into its stream. ``suspect``: its text may hold a secret (a line whose
        record text is not part of ``line.text``, decoded or stitched, always may).

        The common line (no envelope, nothing pending but a one-line group, short) is placed
        here; everything else goes through ``_place``."""
        fields = line.fields
        if fields:
            self._accept_fields(line, fields, now, out, suspect)
            return
        text = line.text
        first = text[:1]
        data = None
        if self._envelopes and line.format_hint is None:
            if first == "{":
                data = json.load_object(text)  # None: not an object, a text line
                if data is not None and "log" in data:
                    entry = docker.unwrap(data)
                    if entry is not None:
                        extra = {"docker_attrs": entry.attrs} if entry.attrs else None
                        # JSON escapes may hide from ``suspects`` what the text shows.
                        single = (line, entry.content, entry.time, None, extra, True)
                        self._place(entry.stream, single, now, out, more=entry.partial)
                        return
            elif first in _DIGITS and text[4:5] == "-":
                envelope = cri.unwrap(text)
                if envelope is not None:
                    single = (line, envelope.content, envelope.time, None, None, suspect)
                    self._place(envelope.stream, single, now, out, more=envelope.partial)
                    return
        name = line.stream
        stream = self._last_stream
        if stream.name != name or self._last_key != line.stream_key:
            stream = self._stream(line.stream_key, name)
        stream.touched = now
        if (
            stream.partial is None
            and stream.group is None
            and len(text) <= self._fast_limit
            and (first in ORDINARY_STARTS or _logfmt_start(text) or _capital_head(first, text))
        ):
            if stream.single is not None:
                self._add_single(out, stream.single, name)
            stream.single = (line, text, None, data, None, suspect)
            return
        self._place(name, (line, text, None, data, None, suspect), now, out)

    def _accept_fields(
        self, line: LogLine, fields: dict[str, Any], now: float, out: list[Record], suspect: bool
    ) -> None:
        """A line handed over with its fields: a Docker/FireLens record (``log`` is the line;
        maybe a part of one), a line with partial markers only, or a structured event."""
        extra = None
        if isinstance(fields.get("log"), str):
            suspect = suspect or fields["log"] is not line.text
            line, extra = _docker_record(line, fields)
        elif not _PARTIAL_KEYS.issuperset(fields):
            self._structured(line, fields, out)
            return
        part_id = None
        more = False
        if fields.get("partial_message") in ("true", True):
            part_id = fields.get("partial_id")
            more = fields.get("partial_last") not in ("true", True)
        single = (line, line.text, None, None, extra, suspect)
        self._place(line.stream, single, now, out, more=more, part_id=part_id)

    def _place(
        self,
        name: str | None,
        single: Single,
        now: float,
        out: list[Record],
        *,
        more: bool = False,
        part_id: Any = None,
    ) -> None:
        """A line (envelope removed: ``single``) into stream ``name`` of its key: stitched to
        a partial line, or into the stream's group. ``more``: parts of this line follow
        (``part_id``: the Docker ``partial_id`` it belongs to)."""
        line, text, when, data, extra, _ = single
        stream = self._last_stream
        if stream.name != name or self._last_key != line.stream_key:
            stream = self._stream(line.stream_key, name)
        stream.touched = now
        if more or stream.partial is not None:
            stitched = self._stitch(stream, line, text, out, when=when, more=more, key=part_id)
            if stitched is None:
                return
            line, text, when = stitched
            single = (line, text, when, data, extra, True)
        elif stream.group is None and len(text) <= self._fast_limit:
            first = text[:1]
            if first in ORDINARY_STARTS or _logfmt_start(text) or _capital_head(first, text):
                if stream.single is not None:
                    self._add_single(out, stream.single, name)
                stream.single = single
                return
        self._add_line(stream, single, out)

    def _stream(self, key: str, name: str | None) -> StreamState:
        streams = self._streams.get(key)
        if streams is None:
            streams = self._streams[key] = {}
        stream = streams.get(name)
        if stream is None:
            stream = streams[name] = StreamState(name)
        self._last_stream, self._last_key = stream, key
        return stream

    def _add_line(self, stream: StreamState, single: Single, out: list[Record]) -> None:
        """A whole line (envelope removed, parts stitched) into the stream's group."""
        text = single[1]
        if len(text) > self._line_quick and byte_length(text) > self._line_limit:
            self._split(stream, single, out)
            return
        if not self._multiline:
            self._drain_group(stream, out)
            if text and not text.isspace():
                self._add_single(out, single, stream.name)
            return
        group = stream.group
        if stream.single is not None:
            state, count = HEAD, 1
        else:
            state, count = (NONE, 0) if group is None else (group.state, len(group.texts))
        joins, state = multiline.classify(state, text, count)
        if joins:
            if group is None:
                assert stream.single is not None
                group = stream.group = Group(stream.single, HEAD)
                stream.single = None
            size = group.size + 1 + byte_length(text)
            if size <= self._group_limit:
                group.add(text, size, state)
                return
            # The group is full: emit it marked, and let its next lines start a new one.
            stream.group = None
            self._add_group(out, group, stream.name, truncated=True)
            counters = self._counters.truncated
            counters["multiline_max_bytes"] = counters.get("multiline_max_bytes", 0) + 1
            line, text, when, data, extra, suspect = single
            single = (line, text, when, data, {**(extra or {}), "continued": True}, suspect)
            stream.group = Group(single, state)
            return
        if state == NONE:
            return  # a blank line with nothing pending
        self._drain_group(stream, out)
        if state == HEAD:
            stream.single = single
        else:
            stream.group = Group(single, state)

    def _stitch(
        self,
        stream: StreamState,
        line: LogLine,
        text: str,
        out: list[Record],
        *,
        when: Moment,
        more: bool,
        key: Any,
    ) -> tuple[LogLine, str, Moment] | None:
        """Add a part to the stream's partial line: the whole line once complete, else None.
        ``more``: parts follow; ``key``: the Docker ``partial_id`` the part belongs to."""
        if stream.partial is not None and key != stream.partial_id:
            self._complete_partial(stream, out)  # another message's parts: finish the old one
        if stream.partial is None:
            if not more:
                return line, text, when
            stream.start_partial(line, text, when, key)
            return None
        stream.partial.append(text)
        stream.partial_size += len(text)
        if more and stream.partial_size <= self._line_cap:
            return None
        return stream.take_partial()

    def _complete_partial(self, stream: StreamState, out: list[Record]) -> None:
        """Emit a partial line as it is (its last part never came, or another began)."""
        line, text, when = stream.take_partial()
        self._add_line(stream, (line, text, when, None, None, True), out)

    def _split(self, stream: StreamState, single: Single, out: list[Record]) -> None:
        """A line over ``max_line_bytes``: each piece becomes its own record, marked."""
        self._drain_group(stream, out)
        line, text, when, _, extra, suspect = single
        pieces = split_line(text, self._line_limit)
        for number, piece in enumerate(pieces, 1):
            marks = {**(extra or {}), "truncated": True, "part": f"{number}/{len(pieces)}"}
            self._add_single(out, (line, piece, when, None, marks, suspect), stream.name)
        counters = self._counters.truncated
        counters["max_line_bytes"] = counters.get("max_line_bytes", 0) + 1

    def _drain_group(self, stream: StreamState, out: list[Record]) -> None:
        """Emit the stream's pending group, if any."""
        if stream.single is not None:
            self._add_single(out, stream.single, stream.name)
            stream.single = None
        elif stream.group is not None:
            self._add_group(out, stream.group, stream.name)
            stream.group = None

    def _drain(self, stream: StreamState, out: list[Record]) -> None:
        if stream.partial is not None:
            self._complete_partial(stream, out)
        self._drain_group(stream, out)

    # -- records -----------------------------------------------------------------------------

    def _parse_text(self, line: LogLine, text: str) -> tuple[str, Record]:
        hint = line.format_hint
        if hint is None:
            if self._auto:  # a direct call: native in the compiled build
                return detect.detect(text, self._now)
            return self._parse(text, self._now)
        return self._hinted.get(hint, self._parse)(text, self._now)

    # Every record is made under a guard: whatever one line holds, an exception in its
    # parsing, normalisation or redaction costs that record alone (counted, logged), never
    # its neighbours or the input.

    def _add_single(self, out: list[Record], single: Single, stream_name: str | None) -> None:
        try:
            out.append(self._emit_single(single, stream_name))
        except Exception as error:
            self._counters.failed(error, self._now)

    def _add_run(self, out: list[Record], single: Single, stream_name: str | None) -> None:
        try:
            out.append(self._emit_run(single, stream_name))
        except Exception as error:
            self._counters.failed(error, self._now)

    def _add_group(
        self, out: list[Record], group: Group, stream_name: str | None, *, truncated: bool = False
    ) -> None:
        try:
            out.append(self._emit_group(group, stream_name, truncated=truncated))
        except Exception as error:
            self._counters.failed(error, self._now)

    def _emit_single(self, single: Single, stream_name: str | None) -> Record:
        """A one-line group as a record: parse, normalise, redact."""
        line, text, when, data, extra, suspect = single
        if data is not None:
            fmt = "json"
            fields = normalise.from_mapping(data, owned=True)
        else:
            fmt, fields = self._parse_text(line, text)
        self._formats[fmt] += 1
        record = self._finish(fields, line, stream_name, when, extra)
        if suspect and self._redactor is not None:
            rules = self._redactor.scan(text, record.get("attributes", _NO_KEYS) if data else None)
            if rules:
                self._redactor.redact(record, rules)
        return record

    def _emit_run(self, single: Single, stream_name: str | None) -> Record:
        """``_emit_single`` for a line of the run ``push_lines`` is placing (the LogLine is
        its ``like``): what ``_finish`` would ask of each line was answered once for the run
        (``_run_head``, ``_run_service``). The record of a JSON, access or logfmt line with
        the usual keys and values is built at once (``schema_record``); others are parsed and
        merged into the defaults without ``_finish``'s questions."""
        line, text, when, data, extra, suspect = single
        if line is not self._run_like:
            # Pending from before: another run of this stream, or of another push.
            return self._emit_single(single, stream_name)
        head = self._run_head
        service = self._run_service
        default_time = self._run_time if when is None else None
        record: Record | None = None
        if data is not None:  # a JSON line push_lines decoded
            if suspect:  # scanned with its keys, as ``_emit_single`` does
                return self._emit_single(single, stream_name)
            fmt = "json"
            record = normalise.schema_record(data, service, default_time, head)
        elif self._auto and line.format_hint is None:
            # The lanes of the common formats: what ``detect`` would read them as.
            first = text[:1]
            if first == "{":  # a record's text (push_lines decodes the others)
                if suspect:  # scanned as ``_emit_single`` scans it
                    return self._emit_single(single, stream_name)
                data = json.load_object(text)
                if data is not None:
                    fmt = "json"
                    record = normalise.schema_record(data, service, default_time, head)
            elif first in _DIGITS:
                if detect.looks_like_access(text):
                    fmt = "clf"
                    record = access.schema_record(text, service or "unknown", head)
            elif first not in ORDINARY_STARTS and _logfmt_start(text):
                data = detect.logfmt_data(text)
                if data is not None:
                    fmt = "logfmt"
                    record = normalise.schema_record(data, service, default_time, head)
        if record is None:
            if data is not None:
                fields = normalise.from_mapping(data, owned=True)
            else:
                fmt, fields = self._parse_text(line, text)
            hint = fields.pop("service", None)
            service = service or hint or "unknown"
            record = {"timestamp": None, "level": "info", "message": "", "service": service}
            if head:
                record.update(head)
            record.update(fields)
            if hint is not None and hint != service:
                record.setdefault("attributes", {}).setdefault("service", hint)
        if record["timestamp"] is None:
            record["timestamp"] = default_time or self._default_time(line, when)
        if extra:
            record.setdefault("attributes", {}).update(extra)
        self._formats[fmt] += 1
        if self._static:
            for key, value in self._static.items():
                record.setdefault(key, value)
        if suspect and self._redactor is not None:
            rules = self._redactor.scan(text)
            if rules:
                self._redactor.redact(record, rules)
        return record

    def _emit_group(
        self, group: Group, stream_name: str | None, *, truncated: bool = False
    ) -> Record:
        """A group of lines as one record: the head parsed, the rest a stack trace (the
        ``error`` field) or continuation lines of the message."""
        texts = group.texts
        while len(texts) > 1 and (not texts[-1] or texts[-1].isspace()):
            texts.pop()  # trailing blank lines were only kept in case a trace went on
        extra = {**(group.extra or {}), "truncated": True} if truncated else group.extra
        single = (group.head, texts[0], group.time, group.data, extra, True)
        if len(texts) == 1 and group.trace_start != 0:
            return self._emit_single(single, stream_name)
        if group.data is not None:
            fmt = "json"
            fields = normalise.from_mapping(group.data, owned=True)
            fields.setdefault("message", "")
        else:
            fmt, fields = self._parse_text(group.head, texts[0])
        raw = "\n".join(texts)
        _add_continuation(fields, texts, raw, group.trace_start, group.state)
        self._counters.groups += 1
        self._formats[fmt] += 1
        record = self._finish(fields, group.head, stream_name, group.time, extra)
        if self._redactor is not None:
            rules = self._redactor.scan(raw)
            if rules:
                self._redactor.redact(record, rules)
        return record

    def _structured(self, line: LogLine, fields: dict[str, Any], out: list[Record]) -> None:
        """A structured event (e.g. fluent-logger's ``emit('tag', {...})``)."""
        stream = self._streams.get(line.stream_key, {}).get(line.stream)
        if stream is not None:
            self._drain_group(stream, out)  # keep the stream's order
        try:
            out.append(self._structured_record(line, fields))
        except Exception as error:  # as ``_add_single``
            self._counters.failed(error, self._now)

    def _structured_record(self, line: LogLine, fields: dict[str, Any]) -> Record:
        record_fields = normalise.from_mapping(fields)
        record_fields.setdefault("message", "")
        container_id = record_fields.pop("container_id", None)
        container_name = record_fields.pop("container_name", None)
        if (container_id and not line.container_id) or (
            container_name and not line.container_name
        ):
            line = dataclasses.replace(
                line,
                container_id=line.container_id or container_id,
                container_name=line.container_name or container_name,
            )
        self._formats["structured"] += 1
        record = self._finish(record_fields, line, line.stream, None, None)
        if self._redactor is not None:
            raw = orjson.dumps(fields, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
            rules = self._redactor.scan(raw, record.get("attributes", _NO_KEYS))
            if rules:
                self._redactor.redact(record, rules)
        return record

    def _finish(
        self,
        fields: Record,
        line: LogLine,
        stream: str | None,
        when: Moment,
        extra: dict[str, Any] | None,
    ) -> Record:
        """Schema fields in order, defaults, service, container, static fields."""
        hint = fields.pop("service", None)
        container_name = line.container_name
        if container_name:
            container_name = container_name.lstrip("/")
        service = self._service or container_name or hint or "unknown"
        # Defaults first, so that the schema fields lead the record; ``update`` replaces
        # them in place with what the line had.
        record: Record = {"timestamp": None, "level": "info", "message": "", "service": service}
        if stream:
            record["stream"] = stream
        container_id = line.container_id
        if container_id:
            record["container_id"] = container_id
        if container_name:
            record["container_name"] = container_name
        record.update(fields)
        if record["timestamp"] is None:
            record["timestamp"] = self._default_time(line, when)
        if extra or (hint is not None and hint != service):
            attributes = record.setdefault("attributes", {})
            if hint is not None and hint != service:
                attributes.setdefault("service", hint)
            if extra:
                attributes.update(extra)
        if self._static:
            for key, value in self._static.items():
                record.setdefault(key, value)
        return record

    def _default_time(self, line: LogLine, when: Moment) -> str:
        """A line without a timestamp of its own: the envelope's (CRI, Docker: text), the
        input's (Forward event time: ``push_lines``' ``times``, or ``LogLine.timestamp``),
        else when it was received."""
        stamp = None
        if when is not None:
            if isinstance(when, str):
                stamp = timestamps.from_text(when)
            else:
                stamp = timestamps.from_epoch(when)
        if stamp is None and line.timestamp is not None:
            stamp = timestamps.from_epoch(line.timestamp)
        if stamp is None:
            if line.received_at != self._received_at:  # a batch shares its receive time
                self._received_at = line.received_at
                self._received_text = (
                    timestamps.from_epoch(line.received_at)
                    or timestamps.from_epoch(self._now)
                    or "1970-01-01T00:00:00.000000Z"
                )
            stamp = self._received_text
        return stamp

    def _publish(self) -> None:
        redactions = self._redactor.counts if self._redactor is not None else {}
        self._counters.publish(redactions, self._now)


def _add_continuation(
    fields: Record, texts: list[str], raw: str, trace_start: int, state: int
) -> None:
    """A group's lines after the head: a stack trace becomes ``error``, other continuation
    lines are appended to the message."""
    message = fields.get("message", "")
    kind: stacktrace.TraceKind | None = None
    if trace_start >= 0:
        kind = multiline.KIND_OF_STATE.get(state)
        if trace_start == 0:
            trace = raw
        else:
            trace = "\n".join(texts[trace_start:])
            if trace_start > 1:
                fields["message"] = "\n".join([message, *texts[1:trace_start]])
    elif any(multiline.is_frame(text) for text in texts[1:]):
        # JavaScript/Ruby frames under a line: the line itself is the error line, or a log
        # line (parsed into a message of its own) with the error in its message.
        trace = raw if message == texts[0] else "\n".join(texts[1:])
    else:
        fields["message"] = "\n".join([message, *texts[1:]])
        return
    error = stacktrace.describe(trace, kind, message)
    if trace_start == 0:  # the group is a trace alone: its error line is the message
        described = error.get("type")
        fields["message"] = f"{described}: {error['message']}" if described else error["message"]
    found = fields.get("error")
    if isinstance(found, dict):
        error.update(found)
    fields["error"] = error
    if "level" not in fields:
        fields["level"] = "fatal" if state == GO else "error"


def _capital_head(first: str, text: str) -> bool:
    """A line led by a capital letter that can only start a group (``multiline.classify``
    says so of any but a Python traceback, a Java ``Exception in thread`` and a Ruby frame)."""
    return (
        first in _CAPITALS
        and not text.startswith(multiline.CAPITAL_TRACE_STARTS)
        and ".rb:" not in text
    )


def _logfmt_start(text: str) -> bool:
    """``key=...``: a logfmt line, which can only start a group (no trace line has an ``=``
    in its first word)."""
    equals = text.find("=", 1, 40)
    return equals > 0 and text.find(" ", 0, equals) < 0


def _earlier(line: LogLine, other: LogLine) -> bool:
    if line.offset is not None and other.offset is not None:
        return line.offset < other.offset
    return line.received_at < other.received_at


def _docker_record(line: LogLine, fields: dict[str, Any]) -> tuple[LogLine, dict[str, Any] | None]:
    """A Docker/FireLens record handed over whole as ``fields``: ``log`` is the line. The
    forward input already made ``line`` from it, so usually nothing changes (and no copy is
    made: this runs for every Forward event)."""
    changes: dict[str, Any] = {}
    text = fields["log"].rstrip("\n")
    if text != line.text:
        changes["text"] = text
    source = fields.get("source")
    if isinstance(source, str) and line.stream is None:
        changes["stream"] = source
    for key in ("container_id", "container_name"):
        value = fields.get(key)
        if isinstance(value, str) and getattr(line, key) is None:
            changes[key] = value
    extra = None
    if not _DOCKER_KEYS.issuperset(fields):
        loose: dict[Any, Any] = fields  # a Forward event's keys may be other than strings
        extra = {key: value for key, value in loose.items() if key not in _DOCKER_KEYS}
    return (dataclasses.replace(line, **changes) if changes else line), extra
