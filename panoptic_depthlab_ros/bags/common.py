"""Reading and writing rosbag2 bags with rosbags: clear errors, raw CDR in and out, both storages.

Messages stay serialized (CDR bytes) between the bag and whoever needs them: rclpy deserializes the
few it must look at. Outputs are written through ``CdrSerializer``, which gives rclpy's bytes with
the alignment padding zeroed (rclpy leaves it uninitialised: leftover process memory in users' bags
and different bytes on every run). The writer takes each type's definition from our typestore
(ROS 2 + vision_msgs), so the bags describe themselves to Foxglove, RViz (via ``ros2 bag play``) and
mcap-ros2-support.

Damaged input: an MCAP without its summary (cut short) is streamed up to the damage
(``SalvageMcapReader``); a .db3 that SQLite calls malformed at open is read row by row up to the
first unreadable page (``SalvageSqliteReader``). Either then raises BagReadError saying where.
"""

from __future__ import annotations

import argparse
import io
import posixpath
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from panoptic_depthlab_core.cli import run_command
from panoptic_depthlab_ros.bag_types import make_typestore
from panoptic_depthlab_ros.image_publisher import serialize_image

from .zero_cdr import RmwZeroSerializer

STORAGES = ("mcap", "sqlite3")
WRITER_VERSION = 9


class BagReadError(ValueError):
    """A bag that cannot be read (missing, not a bag, corrupt, truncated); says where it failed."""


@dataclass(frozen=True)
class BagMessage:
    """One message as stored: topic, type name, bag (log) time in ns, CDR bytes, running index."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    index: int  # 0-based position among the messages read so far (all read topics)


def storage_plugin(name: str) -> Any:
    """rosbags StoragePlugin for ``mcap`` | ``sqlite3``."""
    from rosbags.rosbag2 import StoragePlugin

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if name not in plugins:
        raise ValueError(f"unknown bag storage {name!r}; choose one of {', '.join(STORAGES)}")
    return plugins[name]


def open_bag(path: str | Path) -> Any:
    """Open a rosbag2 bag (directory with metadata.yaml, or a bare .mcap/.db3 file) for reading.

    A bag that indexed reading refuses is salvaged when it is one storage file: an MCAP cut short
    (no summary/footer) with SalvageMcapReader, a .db3 that SQLite finds malformed with
    SalvageSqliteReader. Both read what is intact and report where the damage starts.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag not found: {path}")
    if path.is_dir():
        mcap_files, db3_files = sorted(path.glob("*.mcap")), sorted(path.glob("*.db3"))
    else:
        mcap_files = [path] if path.suffix == ".mcap" else []
        db3_files = [path] if path.suffix == ".db3" else []
    target = path
    if path.is_dir() and not (path / "metadata.yaml").exists():
        if len(mcap_files) + len(db3_files) != 1:
            raise BagReadError(f"{path} is a directory without metadata.yaml, so it is not a rosbag2 bag")
        target = (mcap_files or db3_files)[0]  # a recording that never wrote its metadata
    try:
        reader = Reader(target)
        reader.open()
        return reader
    except Exception as exc:  # ReaderError, sqlite/apsw, struct, OS errors from a damaged file
        reason = f"cannot open bag {path} (corrupt or truncated?): {type(exc).__name__}: {exc}"
        if len(mcap_files) == 1 and not db3_files:
            return SalvageMcapReader(mcap_files[0], reason)
        if len(db3_files) == 1 and not mcap_files:
            return SalvageSqliteReader(db3_files[0], reason)
        raise BagReadError(reason) from exc


def describe_topics(reader: Any) -> str:
    """One line per topic: name, type, message count."""
    lines = []
    for topic, info in sorted(reader.topics.items()):
        lines.append(f"  {topic}  [{info.msgtype}]  {info.msgcount} messages")
    return "\n".join(lines) if lines else "  (the bag has no topics)"


def find_topic(reader: Any, topic: str, msgtypes: Sequence[str], option: str) -> list[Any]:
    """Connections of ``topic``; a ValueError listing the bag's topics when it is absent or mistyped."""
    info = reader.topics.get(topic)
    if info is None:
        raise ValueError(
            f"topic {topic!r} ({option}) is not in bag {reader.path}; the bag has:\n{describe_topics(reader)}"
        )
    if info.msgtype not in msgtypes:
        raise ValueError(
            f"topic {topic!r} ({option}) has type {info.msgtype}, expected {' or '.join(msgtypes)}; "
            f"the bag has:\n{describe_topics(reader)}"
        )
    return list(info.connections)


def iter_bag_messages(reader: Any, connections: Sequence[Any] = ()) -> Iterator[BagMessage]:
    """Yield messages in log-time order; a read failure becomes a BagReadError saying where."""
    it = reader.messages(connections=connections)
    index = 0
    last_time: int | None = None
    last_topic = ""
    while True:
        try:
            connection, log_time, raw = next(it)
        except StopIteration:
            return
        except Exception as exc:
            where = (
                f"after message #{index} (last good: {last_topic} at t={format_ns(last_time)})"
                if last_time is not None
                else "before the first message"
            )
            detail = str(exc) if isinstance(exc, BagReadError) else f"{type(exc).__name__}: {exc}"
            raise BagReadError(
                f"bag {reader.path} is corrupt or truncated: reading stopped {where}: {detail}"
            ) from exc
        yield BagMessage(connection.topic, connection.msgtype, int(log_time), bytes(raw), index)
        index += 1
        last_time, last_topic = int(log_time), connection.topic


def format_ns(ns: int | None) -> str:
    if ns is None:
        return "?"
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d} s"


def stamp_from_cdr(raw: bytes) -> int:
    """Header stamp (ns) of a message whose first field is std_msgs/Header, straight from the CDR.

    CDR: 4-byte encapsulation header, then int32 sec, uint32 nanosec (little or big endian).
    """
    if len(raw) < 12:
        raise ValueError(f"message of {len(raw)} bytes is too short to hold a header stamp")
    endian = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def qos_profiles(transient_local: bool = False, depth: int = 10) -> list[Any]:
    """Offered QoS recorded with a connection: reliable, keep-last, volatile or transient-local."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            depth,
            QosReliability.RELIABLE,
            QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


def msgtype_of(msg: Any) -> str:
    """``pkg/msg/Name`` of an rclpy message instance (module ``pkg.msg._name``)."""
    cls = type(msg)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


# image_transport's transport suffixes: ``/front/image_raw/compressed`` is ``/front/image_raw`` sent
# through the compressed transport, and its CameraInfo is still ``/front/camera_info``.
TRANSPORT_SUFFIXES = ("compressed", "compressedDepth", "theora", "zstd", "ffmpeg", "h264")


def base_image_topic(image_topic: str) -> str:
    """The image topic without an image_transport suffix (``/a/image_raw/compressed`` -> ``/a/image_raw``)."""
    head, tail = posixpath.split(image_topic.rstrip("/"))
    return head if tail in TRANSPORT_SUFFIXES and head not in ("", "/") else image_topic.rstrip("/")


def camera_info_topic_beside(image_topic: str) -> str:
    """Where image_transport puts an image topic's CameraInfo: ``camera_info`` beside the base topic."""
    parent = posixpath.dirname(base_image_topic(image_topic))
    return posixpath.join(parent, "camera_info") if parent else "camera_info"


class CdrSerializer:
    """rclpy message -> CDR bytes with every alignment padding byte zero.

    rclpy's ``serialize_message`` leaves the padding bytes uninitialised (leftover process memory in
    the bag, different bytes on every run). Images go through ``serialize_image`` (the same bytes,
    padding zeroed, pixels copied once). Everything else is serialised by the rmw into a zeroed
    buffer (``zero_cdr.RmwZeroSerializer``), or, where that is not available or disagrees, by rclpy
    and then read back and serialised again by the rosbags typestore, which builds the message in a
    zero-filled buffer (slower: every message is serialised twice, the second time in Python). Values
    and layout are rclpy's either way (the typestore has the same definitions: rosbags' ROS 2 types +
    our vision_msgs .msg files); only padding changes.
    The rmw path is checked once per message type against the rosbags path (same bytes) before use.
    """

    IMAGE = "sensor_msgs/msg/Image"

    def __init__(self, typestore: Any = None, use_rmw: bool = True) -> None:
        if typestore is None:
            typestore = make_typestore()
        self.typestore = typestore
        self._rmw: Any = None
        if use_rmw:
            try:
                rmw = RmwZeroSerializer()
            except Exception:  # no rmw/rcutils library found or loadable: the rosbags path
                rmw = None
            self._rmw = rmw if rmw is not None and rmw.available() else None
        self.rmw_types: dict[str, bool] = {}  # message type -> the rmw path agreed (and is used)

    def __call__(self, msg: Any) -> bytes | memoryview:
        msgtype = msgtype_of(msg)
        if msgtype == self.IMAGE:
            return memoryview(serialize_image(msg))
        if self._rmw is not None:
            agreed = self.rmw_types.get(msgtype)
            if agreed:
                return self._rmw.serialize(msg)
            if agreed is None:
                reference = self._via_rosbags(msg, msgtype)
                try:
                    self.rmw_types[msgtype] = self._rmw.serialize(msg) == bytes(reference)
                except Exception:
                    self.rmw_types[msgtype] = False
                return reference
        return self._via_rosbags(msg, msgtype)

    def _via_rosbags(self, msg: Any, msgtype: str) -> memoryview:
        from rclpy.serialization import serialize_message

        raw = serialize_message(msg)
        if msgtype not in self.typestore.fielddefs:
            raise ValueError(f"cannot serialise {msgtype} with zeroed padding: unknown to the bag typestore")
        return self.typestore.serialize_cdr(self.typestore.deserialize_cdr(raw, msgtype), msgtype)


class BagWriter:
    """A rosbags Writer that adds connections on first use and always closes cleanly.

    ``close`` writes metadata.yaml (and the MCAP summary), so whatever was written before an error
    or Ctrl-C stays a readable bag.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", typestore: Any = None) -> None:
        from rosbags.rosbag2 import Writer
        from rosbags.rosbag2.errors import WriterError

        self.path = Path(path)
        if self.path.exists():
            raise ValueError(f"output bag {self.path} already exists; remove it or choose another path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = typestore if typestore is not None else make_typestore()
        self._writer = Writer(self.path, version=WRITER_VERSION, storage_plugin=storage_plugin(storage))
        try:
            self._writer.open()
        except WriterError as exc:
            raise ValueError(f"cannot create output bag {self.path}: {exc}") from exc
        self._connections: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(
        self,
        topic: str,
        msgtype: str,
        transient_local: bool = False,
        msgdef: str | None = None,
        rihs01: str | None = None,
    ) -> Any:
        """Connection for (topic, type); the definition comes from our typestore, else from
        ``msgdef``/``rihs01`` (copying a connection of another bag)."""
        key = (topic, msgtype)
        connection = self._connections.get(key)
        if connection is None:
            qos = qos_profiles(transient_local)
            if msgtype in self.typestore.fielddefs:
                connection = self._writer.add_connection(
                    topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos
                )
            elif msgdef and rihs01:
                connection = self._writer.add_connection(
                    topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=qos
                )
            else:
                raise ValueError(f"cannot write {topic!r}: type {msgtype} is unknown to the bag typestore")
            self._connections[key] = connection
            self.counts.setdefault(topic, 0)
        return connection

    def write(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(self.add_topic(topic, msgtype), int(log_time_ns), raw)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------
# Salvage: MCAP files cut short (a recorder that crashed, a copy that stopped) have no summary or
# footer, so indexed readers refuse them. We stream the records that are there instead and report
# where the file breaks off when the reading gets there.


@dataclass(frozen=True)
class _Definition:
    data: str


@dataclass(frozen=True)
class _Ext:
    offered_qos_profiles: tuple = ()


@dataclass(frozen=True)
class SalvagedConnection:
    id: int
    topic: str
    msgtype: str
    msgdef: _Definition
    digest: str
    ext: _Ext


@dataclass
class SalvagedTopic:
    msgtype: str
    msgcount: int
    connections: list[SalvagedConnection]


class SalvageMcapReader:
    """Reads the intact records of a truncated or damaged .mcap file; rosbags Reader's interface subset.

    ``messages()`` yields everything before the damage, then raises BagReadError with the byte offset.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.error: str | None = None
        self.error_offset = 0
        self.connections: list[SalvagedConnection] = []
        self.topics: dict[str, SalvagedTopic] = {}
        counts: dict[int, int] = {}
        for record in self._records():
            if record is not None and type(record).__name__ == "Message":
                counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
        for connection in self.connections:
            info = self.topics.setdefault(connection.topic, SalvagedTopic(connection.msgtype, 0, []))
            info.msgcount += counts.get(connection.id, 0)
            info.connections.append(connection)
        if not self.connections:
            raise BagReadError(
                f"{reason}; no intact channel records before the damage at byte "
                f"{self.error_offset} ({self.error})"
            )

    def _records(self) -> Iterator[Any]:
        """Records in file order; remembers connections and where (and why) the stream broke.

        When the break is inside a chunk (the usual case: a recorder writes a chunk at a time), the
        records of that chunk before the cut are read too (``_cut_chunk_records``)."""
        from mcap.stream_reader import StreamReader

        schemas: dict[int, Any] = {}
        known = {c.id for c in self.connections}
        with open(self.path, "rb") as f:
            reader = StreamReader(f, validate_crcs=True)
            record_start = 8  # after the magic
            try:
                for record in reader.records:
                    self._remember(record, schemas, known)
                    yield record
                    record_start = reader._stream.count  # where the next record begins
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.error_offset = reader._stream.count  # bytes consumed when it broke
                for record in self._cut_chunk_records(f, record_start):
                    self._remember(record, schemas, known)
                    yield record
                yield None

    def _remember(self, record: Any, schemas: dict[int, Any], known: set[int]) -> None:
        from mcap.records import Channel, Schema

        if isinstance(record, Schema):
            schemas[record.id] = record
        elif isinstance(record, Channel) and record.id not in known:
            schema = schemas.get(record.schema_id)
            if schema is not None:
                known.add(record.id)
                self.connections.append(
                    SalvagedConnection(
                        record.id,
                        record.topic,
                        schema.name,
                        _Definition(schema.data.decode("utf-8", "replace")),
                        "",
                        _Ext(),
                    )
                )

    def _cut_chunk_records(self, f: Any, offset: int) -> Iterator[Any]:
        """The whole records inside a Chunk record that starts at ``offset`` and is cut short.

        Chunk layout (MCAP spec): opcode 0x06, u64 length, u64 start/end time, u64 uncompressed
        size, u32 crc, string compression, u64 records length, records (none, zstd or lz4). A
        truncated zstd/lz4 stream decompresses up to the cut; the last record may be partial and
        is dropped (the stream reader stops at it)."""
        from mcap.stream_reader import StreamReader

        f.seek(offset)
        head = f.read(9)
        if len(head) < 9 or head[0] != 0x06:
            return
        body = f.read(int.from_bytes(head[1:9], "little"))
        if len(body) < 36:
            return
        name_len = int.from_bytes(body[28:32], "little")
        compression = body[32 : 32 + name_len].decode("ascii", "replace")
        data = body[32 + name_len + 8 :]
        try:
            if compression == "zstd":
                import zstandard

                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            elif compression == "lz4":
                import lz4.frame

                data = lz4.frame.LZ4FrameDecompressor().decompress(data)
            elif compression:
                return
        except Exception:  # damaged compressed data: nothing of this chunk is trustworthy
            return
        inner = StreamReader(io.BytesIO(data), skip_magic=True)
        try:
            yield from inner.records
        except Exception:  # the record the cut runs through
            return

    def messages(self, connections: Sequence[Any] = ()) -> Iterator[tuple[Any, int, bytes]]:
        wanted = {c.id: c for c in (connections or self.connections)}
        for record in self._records():
            if record is None:
                raise BagReadError(f"the data breaks off at byte {self.error_offset} ({self.error})")
            if type(record).__name__ == "Message" and record.channel_id in wanted:
                yield wanted[record.channel_id], record.log_time, record.data

    def close(self) -> None:
        pass


class SalvageSqliteReader:
    """Reads the rows of a damaged rosbag2 .db3 up to the first unreadable one; Reader's interface subset.

    A .db3 cut short (a recorder that lost power, a copy that stopped) makes SQLite refuse the file at
    open ("database disk image is malformed": the header counts more pages than the file holds).
    ``PRAGMA writable_schema`` makes SQLite use the pages that are there instead (read-only and
    immutable: nothing is written). Messages are read in row order (the order the recorder wrote
    them) until the first row SQLite cannot read; ``messages()`` then raises BagReadError naming the
    row, and the file's size against the size its header states. Message counts are the rows whose
    headers are readable (their data may still be cut), so they are an upper bound.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.connections: list[SalvagedConnection] = []
        self.topics: dict[str, SalvagedTopic] = {}
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise BagReadError(f"{reason}; SQLite cannot open it at all: {exc}{self._size_note()}") from exc
        try:
            definitions: dict[str, str] = {}
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"topics", "messages"} <= tables:
                raise BagReadError(f"{reason}; its topics/messages tables are unreadable{self._size_note()}")
            if "message_definitions" in tables:
                with suppress(sqlite3.Error):
                    definitions = dict(
                        db.execute("SELECT topic_type, encoded_message_definition FROM message_definitions")
                    )
            columns = {row[1] for row in db.execute("PRAGMA table_info(topics)")}
            digest = "type_description_hash" if "type_description_hash" in columns else "''"
            for topic_id, name, msgtype, rihs01 in db.execute(
                f"SELECT id, name, type, {digest} FROM topics ORDER BY id"
            ):
                self.connections.append(
                    SalvagedConnection(
                        int(topic_id),
                        str(name),
                        str(msgtype),
                        _Definition(definitions.get(msgtype, "")),
                        str(rihs01 or ""),
                        _Ext(),
                    )
                )
            counts: dict[int, int] = {}
            with suppress(sqlite3.Error):
                for (topic_id,) in db.execute("SELECT topic_id FROM messages ORDER BY id"):
                    counts[topic_id] = counts.get(topic_id, 0) + 1
        except sqlite3.Error as exc:
            raise BagReadError(f"{reason}; even its topic table is unreadable: {exc}{self._size_note()}") from exc
        finally:
            db.close()
        for connection in self.connections:
            info = self.topics.setdefault(connection.topic, SalvagedTopic(connection.msgtype, 0, []))
            info.msgcount += counts.get(connection.id, 0)
            info.connections.append(connection)

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
        db = sqlite3.connect(uri, uri=True)
        db.execute("PRAGMA writable_schema = ON")  # use the pages present, not the header's count
        return db

    def _size_note(self) -> str:
        """`` (file N bytes, its header says M)`` when the header states a different size."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(100)
            size = self.path.stat().st_size
        except OSError:
            return ""
        if len(header) < 32 or not header.startswith(b"SQLite format 3\0"):
            return f" (file {size} bytes, no SQLite header)"
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        stated = int.from_bytes(header[28:32], "big") * page_size
        return f" (file {size} bytes, its header says {stated})" if stated and stated != size else ""

    def messages(self, connections: Sequence[Any] = ()) -> Iterator[tuple[Any, int, bytes]]:
        wanted = {c.id: c for c in (connections or self.connections)}
        db = self._connect()
        last_row = 0
        try:
            marks = ",".join("?" * len(wanted))
            rows = db.execute(
                f"SELECT id, topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) ORDER BY id",
                tuple(wanted),
            )
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except sqlite3.Error as exc:
                    raise BagReadError(
                        f"{self.path.name}: SQLite cannot read the rows after row id {last_row} ({exc})"
                        f"{self._size_note()}"
                    ) from exc
                last_row = int(row[0])
                yield wanted[row[1]], int(row[2]), bytes(row[3])
        finally:
            db.close()

    def close(self) -> None:
        pass


def cli_main(add_arguments: Any, run: Any, prog: str, argv: Sequence[str] | None = None) -> int:
    """``python -m panoptic_depthlab_ros.bags.X``: one subcommand without building the whole CLI."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return run_command(prog, run, parser.parse_args(argv))  # the CLI's error handling, the same exit codes
