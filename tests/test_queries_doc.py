"""docs/queries.md stays true: every column is documented and every query runs and answers."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from infrastructure.application import TwinLedger
from projections.runner import PROJECTIONS
from tests.projection_scenario import build, projector

DOC = (Path(__file__).parent.parent / "docs" / "queries.md").read_text()
QUERY = re.compile(r"<!-- query: (\S+) (postgres|sqlite) -->\s*```sql\n(.*?)```", re.S)
TWIN = "7c2e0f6a-0000-4000-8000-000000000001"
RUN = "7c2e0f6a-0000-4000-8000-000000000002"


def queries(backend: str) -> dict[str, str]:
    return {name: text for name, kind, text in QUERY.findall(DOC) if kind == backend}


def test_every_column_of_every_table_is_documented() -> None:
    for projection in PROJECTIONS:
        for table in projection.tables:
            section = DOC.split(f"## {table.name}\n", 1)[1].split("\n## ", 1)[0]
            for column in table.columns:
                row = f"\n| {column.name} | {column.kind} |"
                assert row in section, f"{table.name}.{column.name} is missing from docs/queries.md"


def test_each_question_has_a_query_for_both_back_ends() -> None:
    for name in ("ranked-runs", "oxygen-year", "spend-per-year"):
        assert name in queries("postgres") and name in queries("sqlite")


def test_the_documented_queries_answer_the_questions(ledger: TwinLedger) -> None:
    s = build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        store = p.store
        backend = "postgres" if store.postgres else "sqlite"

        def run(name: str) -> list[tuple[Any, ...]]:
            text = queries(backend)[name].replace(TWIN, str(s.venus)).replace(RUN, str(s.failed))
            with store.reading() as cursor:
                if store.postgres:
                    cursor.execute(f'SET LOCAL search_path TO "{store.schema}"')
                cursor.execute(text)
                return list(cursor.fetchall())

        ranked = run("ranked-runs")
        habitability = {
            run_id: list(ledger.recorded_years(run_id))[-1].environment.habitability
            for run_id in (s.failed, s.running)
        }
        # Highest first; a tie keeps queue order (the failed run was queued first).
        expected = sorted([s.failed, s.running], key=lambda run_id: -habitability[run_id])
        assert [str(row[0]) for row in ranked] == [str(run_id) for run_id in expected]
        assert [row[4] for row in ranked] == [habitability[run_id] for run_id in expected]

        assert run("oxygen-year") == [(2,)]
        if store.postgres:
            assert (str(s.failed), 2) in [(str(r), y) for r, y in run("oxygen-all")]

        spend: dict[int, int] = defaultdict(int)
        count: dict[int, int] = defaultdict(int)
        for run_id in (s.completed, s.cancelled, s.failed, s.running):
            for result in ledger.recorded_years(run_id):
                spend[result.year] += result.economic.spend_cents
                count[result.year] += 1
        assert run("spend-per-year") == [(year, spend[year], count[year]) for year in sorted(spend)]
