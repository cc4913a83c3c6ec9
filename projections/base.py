"""What a projection is: its tables (DDL per back end) and a batch handler.

A projection declares
- ``name``: how commands and the tracking table call it;
- ``tables``: the read tables it owns (projections/tables.py);
- ``depends_on``: projections whose tables its foreign keys point at. It never runs ahead of
  them, and rebuilding one of them rebuilds it too (projections/rebuild.py);
- ``handles``: for each event class it needs, the lean msgspec type to decode it into
  (projections/decoding.py). Other events are filtered out in SQL and never decoded;
- ``apply(batch)``: writes the rows for a batch of decoded events, in bulk, through the
  batch's cursor. The runner commits them together with the new position.

``version`` is bumped when ``apply`` changes what it writes: like a changed table definition,
it makes the runner rebuild the projection's tables.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.aggregate import Event
from projections.background import BackgroundWriter
from projections.decoding import (
    CompactDecoder,
    Decoded,
    UnhandledEvent,
    builder_for,
    decoder_for,
    fast_decoder,
)
from projections.store import Note, Store
from projections.tables import Table, schema_version


class ProjectionDataError(Exception):
    """A handler found an event that does not fit the tables (e.g. a run of an unknown twin)."""


@dataclass
class Batch:
    store: Store
    cursor: Any
    physical: dict[str, str]  # live table name -> the table written (live or staging)
    events: list[Decoded]
    background: BackgroundWriter | None = None  # a rebuild's writer for bulk inserts

    def table(self, name: str) -> str:
        return self.physical.get(name, name)

    def bulk_insert(
        self,
        name: str,
        columns: Sequence[str],
        rows: list[Any],
        kinds: Sequence[str] | None = None,
    ) -> None:
        """Insert rows into table ``name`` (its live name) in bulk, in this batch.

        For rows nobody reads back in the same rebuild (append-only tables): in a PostgreSQL
        rebuild they may be written by the background writer (projections/background.py).
        """
        if self.background is not None:
            self.background.insert(self.table(name), columns, rows, kinds)
        else:
            self.store.bulk_insert(self.cursor, self.table(name), columns, rows, kinds)

    def copy_binary(self, name: str, columns: Sequence[str], stream: bytes) -> None:
        """PostgreSQL, no background writer: COPY a binary stream the projection built
        (``Store.copy_binary``) into table ``name`` (its live name), in this batch."""
        self.store.copy_binary(self.cursor, self.table(name), columns, stream)


class Projection(ABC):
    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    depends_on: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[dict[type[Event], type[Any]]]
    version: ClassVar[int] = 1

    def __init__(self) -> None:
        self._decoders = {
            get_topic(event): (event, decoder_for(event, lean))
            for event, lean in self.handles.items()
        }
        self.fast: dict[str, tuple[type[Event], CompactDecoder]] = {}
        """Per topic of a class stored compact: its fast decoding path (decoding.fast_decoder),
        which ``CatchUp._decode`` runs inline for each note, falling back to ``decode``."""
        for event, lean in self.handles.items():
            fast = fast_decoder(event, lean)
            if fast is not None:
                self.fast[get_topic(event)] = (event, fast)
        self.builders: dict[str, tuple[type[Event], Callable[[Any], Any]]] = {}
        """Per topic: the lean value from the event object itself (decoding.builder_for), for
        events this process just saved (projections/catchup.py, ``remember``)."""
        for event, lean in self.handles.items():
            build = builder_for(event, lean)
            if build is not None:
                self.builders[get_topic(event)] = (event, build)

    @cached_property
    def topics(self) -> frozenset[str]:
        return frozenset(self._decoders)

    @property
    def schema_version(self) -> str:
        return schema_version(self.tables, self.version)

    def decode(self, note: Note) -> Decoded:
        try:
            event, decode = self._decoders[note.topic]
        except KeyError:
            raise UnhandledEvent(note, f"projection {self.name} has no handler for it") from None
        try:
            return Decoded(note.position, event, decode(note))
        except Exception as error:
            raise UnhandledEvent(note, f"cannot decode its state: {error}") from error

    @abstractmethod
    def apply(self, batch: Batch) -> None:
        """Write the rows for ``batch.events`` (in log order) through ``batch.cursor``."""


class Fold:
    """Rows of one table changed by a batch, folded in memory and written back in bulk.

    ``load`` reads the existing rows a batch touches (one query; ``mutable`` and ``load_also``
    columns); handlers change them as
    plain dicts; ``flush`` inserts the new rows and updates the changed ones with one
    executemany each. Only ``mutable`` columns are ever updated; ``write_once`` ones are
    updated with COALESCE so a value once set is kept.
    """

    def __init__(
        self,
        batch: Batch,
        table: Table,
        *,
        mutable: tuple[str, ...],
        write_once: tuple[str, ...] = (),
        load_also: tuple[str, ...] = (),
    ) -> None:
        self.batch = batch
        self.table = table
        self.kinds = table.kinds()
        self.mutable = mutable
        self.write_once = write_once
        self.load_also = load_also
        self.rows: dict[UUID, dict[str, Any]] = {}
        self.new: set[UUID] = set()

    def load(self, ids: Iterable[UUID]) -> None:
        wanted = [i for i in set(ids) if i not in self.rows]
        if not wanted:
            return
        store, cursor = self.batch.store, self.batch.cursor
        columns = ("id", *self.mutable, *self.load_also)
        names = ", ".join(f'"{c}"' for c in columns)
        physical = self.batch.table(self.table.name)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            if store.postgres:
                cursor.execute(
                    store.sql(f"SELECT {names} FROM {{t}} WHERE id = ANY(%s)", t=physical),
                    (chunk,),
                )
            else:
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    f'SELECT {names} FROM "{physical}" WHERE id IN ({marks})',
                    [str(i) for i in chunk],
                )
            for values in cursor.fetchall():
                row = {
                    column: store.from_db(self.kinds[column], value)
                    for column, value in zip(columns, values, strict=True)
                }
                self.rows[row["id"]] = row

    def get(self, ident: UUID) -> dict[str, Any] | None:
        return self.rows.get(ident)

    def create(self, ident: UUID, row: dict[str, Any]) -> dict[str, Any]:
        if ident in self.rows:
            raise ProjectionDataError(f"{self.table.name} already has a row {ident}")
        row = {"id": ident, **row}
        self.rows[ident] = row
        self.new.add(ident)
        return row

    def flush(self, changed: set[UUID]) -> None:
        store, cursor = self.batch.store, self.batch.cursor
        physical = self.batch.table(self.table.name)
        kinds = self.kinds
        inserts = [
            tuple(store.to_db(kinds[c], self.rows[i].get(c)) for c in self.table.column_names)
            for i in sorted(self.new)
        ]
        if inserts:
            names = ", ".join(f'"{c}"' for c in self.table.column_names)
            marks = ", ".join(["%s"] * len(self.table.column_names))
            cursor.executemany(
                store.sql(f"INSERT INTO {{t}} ({names}) VALUES ({marks})", t=physical), inserts
            )
        existing = sorted(i for i in changed if i not in self.new)
        if existing:
            sets = [f'"{c}" = %s' for c in self.mutable]
            sets += [f'"{c}" = COALESCE(%s, "{c}")' for c in self.write_once]
            statement = store.sql(f"UPDATE {{t}} SET {', '.join(sets)} WHERE id = %s", t=physical)
            columns = (*self.mutable, *self.write_once)
            cursor.executemany(
                statement,
                [
                    (
                        *(store.to_db(kinds[c], self.rows[i].get(c)) for c in columns),
                        store.to_db("uuid", i),
                    )
                    for i in existing
                ],
            )
