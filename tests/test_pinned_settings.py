"""eventsourcing's settings in the process environment (plain or TWINLEDGER_-prefixed) change
nothing: events are stored as the ledger expects, where the --db URL says (issue 10, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from infrastructure.application import TwinLedger
from infrastructure.pg_recorder import CopyApplicationRecorder
from projections.runner import Projector

ZLIB = "eventsourcing.compressor:ZlibCompressor"
SETTINGS = [
    ("POSTGRES_ENABLE_DB_FUNCTIONS", "y"),
    ("TWINLEDGER_POSTGRES_ENABLE_DB_FUNCTIONS", "y"),
    ("COMPRESSOR_TOPIC", ZLIB),
    ("TWINLEDGER_COMPRESSOR_TOPIC", ZLIB),
    ("CIPHER_TOPIC", "eventsourcing.cipher:AESCipher"),
    ("TWINLEDGER_CIPHER_KEY", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="),
    ("IS_SNAPSHOTTING_ENABLED", "y"),
    ("TWINLEDGER_IS_SNAPSHOTTING_ENABLED", "y"),
    ("PERSISTENCE_MODULE", "eventsourcing.popo"),
    ("TWINLEDGER_PERSISTENCE_MODULE", "eventsourcing.popo"),
    ("MAPPER_TOPIC", "eventsourcing.persistence:Mapper"),
    ("TWINLEDGER_TRANSCODER_TOPIC", "eventsourcing.persistence:JSONTranscoder"),
    ("TWINLEDGER_APPLICATION_RECORDER_TOPIC", "eventsourcing.sqlite:SQLiteApplicationRecorder"),
    ("ORIGINATOR_ID_TYPE", "text"),
    ("CREATE_TABLE", "no"),
    ("TWINLEDGER_POSTGRES_SCHEMA", "nowhere_pinned"),
    ("TWINLEDGER_SQLITE_DBNAME", "{tmp}/elsewhere.db"),
    ("TWINLEDGER_AGGREGATE_CACHE_MAXSIZE", "100"),
]


@pytest.mark.parametrize(("variable", "value"), SETTINGS)
def test_a_library_setting_in_the_environment_changes_nothing(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    ledger = TwinLedger.open(database_url)
    try:
        assert ledger.database is not None
        twin_id = ledger.clone_twin(name="Mars A", body="mars")
        assert ledger.mapper.compressor is None and ledger.mapper.cipher is None
        assert ledger.snapshots is None
        assert ledger.repository.cache is None
        (stored,) = ledger.recorder.select_notifications(start=None, limit=10)
        assert stored.state.startswith(b'{"')  # plain JSON: what projections and archives read
        datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
        if ledger.database.is_postgres:
            assert isinstance(ledger.recorder, CopyApplicationRecorder)
            assert isinstance(datastore, PostgresDatastore)
            assert datastore.enable_db_functions is False  # inserts keep the table lock
            assert (datastore.schema, datastore.originator_id_type) == (
                ledger.database.schema,
                "uuid",
            )
        else:
            assert isinstance(datastore, SQLiteDatastore)
            assert not (tmp_path / "elsewhere.db").exists()
        with Projector(ledger.database) as projector:
            projector.catch_up()
            with projector.store.reading() as cursor:
                cursor.execute(projector.store.sql("SELECT id FROM {t}", t="digital_twins"))
                assert [str(row[0]).replace("-", "") for row in cursor.fetchall()] == [twin_id.hex]
    finally:
        ledger.close()
