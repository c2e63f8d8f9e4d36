"""Reading and writing rosbag2 bags with rosbags: clear errors, raw CDR in and out, both storages.

Messages stay serialized (CDR bytes) between the bag and whoever needs them: rclpy deserializes the
few it must look at, and outputs are written as the bytes rclpy serialized. The writer takes each
type's definition from our typestore (ROS 2 + vision_msgs), so the bags describe themselves to
Foxglove, RViz (via ``ros2 bag play``) and mcap-ros2-support.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    An MCAP file that indexed reading refuses (truncated: no summary/footer) is opened with
    SalvageMcapReader, which reads what is intact and reports where the damage starts.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag not found: {path}")
    mcap_files = sorted(path.glob("*.mcap")) if path.is_dir() else ([path] if path.suffix == ".mcap" else [])
    target = path
    if path.is_dir() and not (path / "metadata.yaml").exists():
        if len(mcap_files) != 1:
            raise BagReadError(f"{path} is a directory without metadata.yaml, so it is not a rosbag2 bag")
        target = mcap_files[0]  # a recording that never wrote its metadata
    try:
        reader = Reader(target)
        reader.open()
        return reader
    except Exception as exc:  # ReaderError, sqlite/apsw, struct, OS errors from a damaged file
        reason = f"cannot open bag {path} (corrupt or truncated?): {type(exc).__name__}: {exc}"
        if len(mcap_files) == 1:
            return SalvageMcapReader(mcap_files[0], reason)
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


class BagWriter:
    """A rosbags Writer that adds connections on first use and always closes cleanly.

    ``close`` writes metadata.yaml (and the MCAP summary), so whatever was written before an error
    or Ctrl-C stays a readable bag.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", typestore: Any = None) -> None:
        from rosbags.rosbag2 import Writer
        from rosbags.rosbag2.errors import WriterError

        from panoptic_depthlab_ros.bag_types import make_typestore

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
        """Records in file order; remembers connections and where (and why) the stream broke."""
        from mcap.records import Channel, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, Any] = {}
        known = {c.id for c in self.connections}
        with open(self.path, "rb") as f:
            reader = StreamReader(f, validate_crcs=True)
            try:
                for record in reader.records:
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
                    yield record
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.error_offset = reader._stream.count  # bytes consumed when it broke
                yield None

    def messages(self, connections: Sequence[Any] = ()) -> Iterator[tuple[Any, int, bytes]]:
        wanted = {c.id: c for c in (connections or self.connections)}
        for record in self._records():
            if record is None:
                raise BagReadError(f"the data breaks off at byte {self.error_offset} ({self.error})")
            if type(record).__name__ == "Message" and record.channel_id in wanted:
                yield wanted[record.channel_id], record.log_time, record.data

    def close(self) -> None:
        pass


def cli_main(add_arguments: Any, run: Any, prog: str, argv: Sequence[str] | None = None) -> int:
    """``python -m panoptic_depthlab_ros.bags.X``: one subcommand without building the whole CLI."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
