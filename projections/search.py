"""Search runs with a small filter language, like MLflow's search_runs (docs/queries.md, Search).

    pattern = 'mars_terraform' and summary.habitability > 0.3 and params.tech_level >= 5

A filter is tokenized and parsed (recursive descent, bounded depth) into a tree of frozen
dataclasses, checked against the allow-list of fields, and compiled to *parameterised* SQL for
SQLite (json_extract) or PostgreSQL (jsonb operators). Values, and even JSON keys, travel as
bound parameters; the only names spliced into SQL are column names from the allow-list. Every
comparison is two-valued (a missing or NULL value, or one of another type, makes it false), so
`not` means "does not match" and SQLite, PostgreSQL and a Python filter agree row for row.

Pages are keyset pages: the cursor holds the last row's sort values and id, and the
next page starts strictly after them, so a page never repeats or skips a row, however deep.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.errors import ValidationError
from projections.queries import plain
from projections.runs import SIMULATION_RUNS
from projections.store import Store, iso

MAX_FILTER_CHARS = 4000
MAX_DEPTH = 32  # nested parentheses and `not`s
MAX_COMPARISONS = 64
MAX_IN_VALUES = 100
MAX_ORDER_KEYS = 4
MAX_CURSOR_CHARS = 4096
MAX_EQUAL_CHARS = 200  # an exact-match value (status, pattern, ...), as the CLI's text limit
DEFAULT_LIMIT = 50  # as the other lists of the service layer (infrastructure/pages.py)
MAX_LIMIT = 1000
INT64 = 2**63

# --- fields -----------------------------------------------------------------------------------

KIND = {column.name: column.kind for column in SIMULATION_RUNS.columns}
NULLABLE = {column.name: column.nullable for column in SIMULATION_RUNS.columns}
COLUMNS: dict[str, str] = {
    name: name for name, kind in KIND.items() if kind != "json"
}  # every plain column of simulation_runs, by its own name
COLUMNS["created_at"] = "queued_at"  # when the run was created, as MLflow and the API say
SUMMARY_COLUMNS = {  # the summary's headline numbers are columns (indexable, no JSON decoding)
    "habitability": "habitability_score",
    "habitability_score": "habitability_score",
    "total_spend_cents": "total_spend_cents",
    "total_revenue_cents": "total_revenue_cents",
    "final_balance_cents": "final_balance_cents",
}
SUCCESS_METRICS = ("timeline_efficiency", "resource_efficiency", "cost_efficiency")
RUN_PARAMETERS = ("budget_cents", "tech_level", "priority")
JSON_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
MAX_PATH = 4
NUMBER_KINDS = ("int", "bigint", "float")


@dataclass(frozen=True)
class Field:
    """A field a filter names: a column of simulation_runs, or a path into a JSON column."""

    text: str  # as the user wrote it
    position: int
    column: str
    path: tuple[str, ...] = ()  # empty: the column itself

    @property
    def kind(self) -> str:
        """The column's kind, or ``json`` for a value inside a JSON column."""
        return "json" if self.path else KIND[self.column]


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str  # =, !=, <, <=, >, >=
    value: str | int | float
    position: int


@dataclass(frozen=True)
class In:
    field: Field
    values: tuple[str | int | float, ...]


@dataclass(frozen=True)
class IsNull:
    field: Field


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Compare | In | IsNull | Not | And | Or


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool


# --- tokens -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE | re.ASCII,
)
KEYWORDS = ("and", "or", "not", "in", "is", "null", "asc", "desc")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, name, keyword, op, punct, end
    text: str
    position: int  # 1-based character position in the input

    def shown(self) -> str:
        if self.kind == "end":
            return "the end"
        if self.position == 0:  # a value given outside a filter text (a CLI option)
            return _show(self.text)
        return f"{_show(self.text)} at position {self.position}"


def _show(text: str) -> str:
    """A token as an error message shows it: quoted, control characters escaped, kept short."""
    short = text if len(text) <= 40 else text[:37] + "..."
    return short if short.startswith("'") else repr(short)  # a string literal as written


def check_equal(name: str, value: str) -> None:
    """An exact-match value given outside a filter (--status, --pattern): no control character
    (NUL: PostgreSQL cannot compare it; a lone surrogate: no driver can send it), not long."""
    bad = _CONTROL.search(value)
    if bad is not None or len(value) > MAX_EQUAL_CHARS:
        problem = (
            f"must be at most {MAX_EQUAL_CHARS} characters"
            if bad is None
            else f"control character {bad.group()!r} at position {bad.start() + 1}"
        )
        raise ValidationError(name, problem)


def tokenize(text: str, field: str) -> list[Token]:
    if len(text) > MAX_FILTER_CHARS:
        raise ValidationError(
            field, f"is {len(text)} characters long; the limit is {MAX_FILTER_CHARS}"
        )
    bad = _CONTROL.search(text)
    if bad is not None:
        raise ValidationError(
            field, f"control character {bad.group()!r} at position {bad.start() + 1}"
        )
    tokens: list[Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            if text[at] == "'":
                raise ValidationError(field, f"unterminated string at position {at + 1}")
            raise ValidationError(field, f"unexpected character {text[at]!r} at position {at + 1}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            word = match.group()
            if kind == "name" and word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word.lower(), at + 1))
            else:
                tokens.append(Token(kind, word, at + 1))
        at = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# --- parsing ----------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens; depth is bounded, so no input can exhaust the stack.

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" or ")" | condition
    condition  := field op literal | field ["not"] "in" "(" literal ("," literal)* ")"
                | field "is" ["not"] "null"
    order_by   := field ["asc" | "desc"] ("," field ["asc" | "desc"])*
    """

    def __init__(self, text: str, field: str) -> None:
        self.field = field
        self.tokens = tokenize(text, field)
        self.at = 0
        self.comparisons = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def unexpected(self, wanted: str) -> ValidationError:
        token = self.token
        if token.kind == "end":
            return ValidationError(self.field, f"expected {wanted}, found the end of the text")
        return ValidationError(self.field, f"expected {wanted}, found {token.shown()}")

    def take(self, kind: str, text: str | None = None) -> Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            self.at += 1
            return token
        return None

    # filter

    def parse_filter(self) -> Node:
        if self.token.kind == "end":
            raise ValidationError(self.field, "is empty; leave it out to match every run")
        node = self.parse_or(0)
        if self.token.kind != "end":
            raise self.unexpected("`and`, `or`, `)` or the end")
        return node

    def parse_or(self, depth: int) -> Node:
        items = [self.parse_and(depth)]
        while self.take("keyword", "or"):
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self, depth: int) -> Node:
        items = [self.parse_unary(depth)]
        while self.take("keyword", "and"):
            items.append(self.parse_unary(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self, depth: int) -> Node:
        token = self.token
        if token.kind in ("keyword", "punct") and token.text in ("not", "("):
            if depth >= MAX_DEPTH:
                raise ValidationError(
                    self.field,
                    f"nested more than {MAX_DEPTH} levels deep at {token.shown()}",
                )
            self.at += 1
            if token.text == "not":
                return Not(self.parse_unary(depth + 1))
            node = self.parse_or(depth + 1)
            if not self.take("punct", ")"):
                raise self.unexpected("`)` closing the `(` at position " + str(token.position))
            return node
        return self.parse_condition()

    def parse_condition(self) -> Node:
        field = self.parse_field()
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise ValidationError(
                self.field,
                f"more than {MAX_COMPARISONS} conditions (at {_show(field.text)} at position "
                f"{field.position})",
            )
        if self.take("keyword", "is"):
            negated = self.take("keyword", "not") is not None
            if not self.take("keyword", "null"):
                raise self.unexpected("`null` after `is`")
            node: Node = IsNull(field)
            return Not(node) if negated else node
        negated = self.token.kind == "keyword" and self.token.text == "not"
        if negated:
            self.at += 1
            if not (self.token.kind == "keyword" and self.token.text == "in"):
                raise self.unexpected("`in` after `not`")
        if self.take("keyword", "in"):
            opening = self.token
            if not self.take("punct", "("):
                raise self.unexpected("`(` after `in`")
            values = [self.parse_literal(field)]
            while self.take("punct", ","):
                if len(values) >= MAX_IN_VALUES:
                    raise ValidationError(
                        self.field,
                        f"more than {MAX_IN_VALUES} values in the list at position "
                        f"{opening.position}",
                    )
                values.append(self.parse_literal(field))
            if not self.take("punct", ")"):
                raise self.unexpected("`,` or `)` in the list")
            self.check_op(field, "=", opening)
            node = In(field, tuple(values))
            return Not(node) if negated else node
        op = self.take("op")
        if op is None:
            raise self.unexpected(f"a comparison (=, !=, <, <=, >, >=, in, is) after {field.text}")
        symbol = "!=" if op.text == "<>" else op.text
        self.check_op(field, symbol, op)
        start = self.token.position
        value = self.parse_literal(field)
        return Compare(field, symbol, value, start)

    def check_op(self, field: Field, op: str, token: Token) -> None:
        if field.kind == "uuid" and op not in ("=", "!="):
            raise ValidationError(
                self.field,
                f"{_show(token.text)} at position {token.position}: {field.text} is an id; "
                "only =, != and in compare ids",
            )

    def parse_field(self) -> Field:
        token = self.token
        if token.kind != "name":
            raise self.unexpected("a field name (e.g. status, summary.habitability)")
        self.at += 1
        return resolve_field(token.text, token.position, self.field)

    def parse_literal(self, field: Field) -> str | int | float:
        token = self.token
        if token.kind == "string":
            self.at += 1
            value: str | int | float = token.text[1:-1].replace("''", "'")
        elif token.kind == "number":
            self.at += 1
            value = _number(token, self.field)
        else:
            raise self.unexpected("a value ('text' in single quotes, or a number)")
        return _typed(field, value, token, self.field)

    # order_by

    def parse_order(self) -> tuple[OrderKey, ...]:
        if self.token.kind == "end":
            raise ValidationError(self.field, "is empty; leave it out for the default order")
        keys: list[OrderKey] = []
        seen: set[tuple[str, tuple[str, ...]]] = set()
        while True:
            field = self.parse_field()
            if (field.column, field.path) in seen:
                raise ValidationError(
                    self.field, f"{_show(field.text)} at position {field.position} is given twice"
                )
            seen.add((field.column, field.path))
            descending = False
            if self.token.kind == "keyword" and self.token.text in ("asc", "desc"):
                descending = self.token.text == "desc"
                self.at += 1
            keys.append(OrderKey(field, descending))
            if len(keys) > MAX_ORDER_KEYS:
                raise ValidationError(
                    self.field,
                    f"more than {MAX_ORDER_KEYS} keys (at {_show(field.text)} at position "
                    f"{field.position})",
                )
            if not self.take("punct", ","):
                break
        if self.token.kind != "end":
            raise self.unexpected("`asc`, `desc`, `,` or the end")
        return tuple(keys)


def _number(token: Token, field: str) -> int | float:
    text = token.text
    if re.fullmatch(r"-?[0-9]+", text):
        value = int(text)
        if not -INT64 <= value < INT64:
            raise ValidationError(
                field, f"{_show(text)} at position {token.position} is outside the 64-bit range"
            )
        return value
    number = float(text)
    if not math.isfinite(number):
        raise ValidationError(field, f"{_show(text)} at position {token.position} is too large")
    return number


def _typed(field: Field, value: str | int | float, token: Token, name: str) -> str | int | float:
    """Check a literal against its field's kind (JSON values may be of any type)."""
    kind = field.kind
    where = token.shown()
    if kind in NUMBER_KINDS and isinstance(value, str):
        raise ValidationError(name, f"{where}: {field.text} is a number, not text")
    if kind in ("text", "uuid", "timestamp") and not isinstance(value, str):
        raise ValidationError(name, f"{where}: {field.text} is {kind}; quote the value")
    if kind == "uuid":
        try:
            return str(UUID(str(value)))
        except ValueError:
            raise ValidationError(name, f"{where} is not a valid id") from None
    if kind == "timestamp":
        return iso(_moment(str(value), where, name))
    return value


def _moment(text: str, where: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            name, f"{where} is not an ISO 8601 time like '2031-01-01T00:00:00Z'"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def resolve_field(text: str, position: int, name: str = "filter") -> Field:
    """A field name from the allow-list, or a summary./params. path of strict JSON keys."""
    head, _, rest = text.partition(".")
    if not rest:
        column = COLUMNS.get(text)
        if KIND.get(text) == "json":
            prefix = "params" if text == "parameters" else "summary"
            raise ValidationError(
                name,
                f"{_show(text)} at position {position} holds JSON: name a value in it, "
                f"e.g. {prefix}.NAME",
            )
        if column is None:
            raise ValidationError(
                name,
                f"unknown field {_show(text)} at position {position}; fields are the columns of "
                "simulation_runs (docs/queries.md), summary.NAME and params.NAME",
            )
        return Field(text, position, column)
    parts = rest.split(".")
    bad = next((part for part in parts if not JSON_KEY.fullmatch(part)), None)
    if bad is not None or len(parts) > MAX_PATH:
        raise ValidationError(
            name,
            f"field {_show(text)} at position {position}: keys are at most {MAX_PATH} "
            "names of letters, digits and _ (at most 64 characters each)",
        )
    if head == "summary":
        if len(parts) == 1 and parts[0] in SUMMARY_COLUMNS:
            return Field(text, position, SUMMARY_COLUMNS[parts[0]])
        if len(parts) == 1 and parts[0] in SUCCESS_METRICS:
            return Field(text, position, "results", ("success_metrics", parts[0]))
        return Field(text, position, "results", tuple(parts))
    if head == "params":
        if len(parts) != 1:
            raise ValidationError(
                name, f"field {_show(text)} at position {position}: params.NAME takes one name"
            )
        key = parts[0]
        path = (key,) if key in RUN_PARAMETERS else ("pattern_params", key)
        return Field(text, position, "parameters", path)
    raise ValidationError(
        name,
        f"unknown field {_show(text)} at position {position}; dotted fields start with "
        "summary. or params.",
    )


def parse_filter(text: str, field: str = "filter") -> Node:
    """The tree of a filter; ValidationError(field, ...) names the bad token and its position."""
    return _Parser(text, field).parse_filter()


def parse_order_by(text: str, field: str = "order_by") -> tuple[OrderKey, ...]:
    return _Parser(text, field).parse_order()


# --- SQL --------------------------------------------------------------------------------------


class _Compiler:
    """Turns a tree into SQL text with %s placeholders and the list of their values."""

    def __init__(self, store: Store) -> None:
        self.postgres = store.postgres
        self.store = store
        self.params: list[Any] = []

    def json_path(self, path: tuple[str, ...]) -> Any:
        return list(path) if self.postgres else "$." + ".".join(path)

    def json_type(self, field: Field) -> str:
        """The JSON type of the value (NULL when absent). On PostgreSQL the column is read as
        jsonb whether it is stored as json or jsonb."""
        self.params.append(self.json_path(field.path))
        column = _quote(field.column)
        if self.postgres:
            return f"jsonb_typeof({column}::jsonb #> %s::text[])"
        return f"json_type({column}, %s)"

    def json_number(self, field: Field) -> str:
        """The value as a number, or NULL when it is missing or not a number."""
        kind = self.json_type(field)
        self.params.append(self.json_path(field.path))
        column = _quote(field.column)
        if self.postgres:
            return f"CASE WHEN {kind} = 'number' THEN ({column}::jsonb #> %s::text[])::numeric END"
        return f"CASE WHEN {kind} IN ('integer', 'real') THEN json_extract({column}, %s) END"

    def json_text(self, field: Field) -> str:
        kind = self.json_type(field)
        self.params.append(self.json_path(field.path))
        column = _quote(field.column)
        if self.postgres:
            text = f"({column}::jsonb #>> %s::text[])"
            return f"CASE WHEN {kind} = 'string' THEN {text} COLLATE \"C\" END"
        return f"CASE WHEN {kind} = 'text' THEN json_extract({column}, %s) END"

    def value(self, field: Field, sample: str | int | float, ordered: bool = True) -> str:
        """An SQL expression for the field, typed like ``sample`` for JSON fields.

        Text is ordered by code point (``COLLATE "C"`` on PostgreSQL, as SQLite and Python
        order it); equality needs no collation, so it can use the column's index.
        """
        if field.path:
            return self.json_text(field) if isinstance(sample, str) else self.json_number(field)
        column = _quote(field.column)
        if self.postgres and field.kind == "text" and ordered:
            return f'{column} COLLATE "C"'
        return column

    def bind(self, field: Field, value: str | int | float) -> str:
        if not field.path:
            if field.kind == "uuid":
                value = self.store.uuid(UUID(str(value)))
            elif field.kind == "timestamp":
                value = self.store.timestamp(datetime.fromisoformat(str(value)))
        self.params.append(value)
        return "%s"

    def two_valued(self, field: Field, condition: str) -> str:
        """The condition, false (never NULL) where the value is missing.

        A NOT NULL column needs nothing; a nullable one is tested first (both forms can use an
        index); a JSON value's guarded CASE is NULL when absent or of another type.
        """
        if field.path:
            return f"COALESCE({condition}, {'false' if self.postgres else '0'})"
        if NULLABLE[field.column]:
            return f"({_quote(field.column)} IS NOT NULL AND {condition})"
        return condition

    def node(self, node: Node) -> str:
        if isinstance(node, Compare):
            op = "<>" if node.op == "!=" else node.op
            left = self.value(node.field, node.value, ordered=op not in ("=", "<>"))
            return self.two_valued(node.field, f"{left} {op} {self.bind(node.field, node.value)}")
        if isinstance(node, In):
            if not node.field.path:
                marks = ", ".join(self.bind(node.field, value) for value in node.values)
                column = _quote(node.field.column)
                return self.two_valued(node.field, f"{column} IN ({marks})")
            parts = []
            for value in node.values:
                left = self.value(node.field, value)
                parts.append(f"{left} = {self.bind(node.field, value)}")
            return self.two_valued(node.field, "(" + " OR ".join(parts) + ")")
        if isinstance(node, IsNull):
            if node.field.path:
                return f"COALESCE({self.json_type(node.field)}, 'null') = 'null'"
            return f"{_quote(node.field.column)} IS NULL"
        if isinstance(node, Not):
            return f"NOT ({self.node(node.item)})"
        if isinstance(node, And):
            return "(" + " AND ".join(self.node(item) for item in node.items) + ")"
        return "(" + " OR ".join(self.node(item) for item in node.items) + ")"

    def sort_expression(self, field: Field) -> str:
        """What a key sorts by: the column, or a JSON value's number (non-numbers sort as NULL)."""
        return self.json_number(field) if field.path else self.value(field, "")


def _quote(column: str) -> str:
    assert column in KIND, column  # allow-listed names only ever reach the SQL text
    return f'"{column}"'


def compile_filter(store: Store, node: Node) -> tuple[str, list[Any]]:
    """The WHERE condition for ``node`` on this store's back end, and its parameters."""
    compiler = _Compiler(store)
    return compiler.node(node), compiler.params


# --- pages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPage:
    """One page of runs (rows as `twinledger runs --format json` prints them) and the cursor of
    the next page (None on the last)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


ID_KEY = OrderKey(Field("id", 0, "id"), False)
DEFAULT_ORDER = (OrderKey(Field("created_at", 0, "queued_at"), False), ID_KEY)


def _full_order(keys: tuple[OrderKey, ...]) -> tuple[OrderKey, ...]:
    """The keys, ended by the run id (unique) so that the order is total."""
    for index, key in enumerate(keys):
        if key.field.column == "id" and not key.field.path:
            return keys[: index + 1]
    return (*keys, ID_KEY)


def _order_text(keys: tuple[OrderKey, ...]) -> str:
    return ", ".join(
        f"{k.field.column}{'.' + '.'.join(k.field.path) if k.field.path else ''}"
        f" {'desc' if k.descending else 'asc'}"
        for k in keys
    )


def _cursor_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def encode_cursor(keys: tuple[OrderKey, ...], values: list[Any]) -> str:
    text = json.dumps({"o": _order_text(keys), "v": [_cursor_value(v) for v in values]})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(
    store: Store, keys: tuple[OrderKey, ...], cursor: str, field: str = "cursor"
) -> list[Any]:
    """The sort values a cursor holds, checked value by value against the keys' kinds."""
    invalid = ValidationError(field, "is not a cursor returned by this search")
    if len(cursor) > MAX_CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor, re.ASCII):
        raise invalid
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(data, dict) or not isinstance(data.get("v"), list):
        raise invalid
    if data.get("o") != _order_text(keys):
        raise ValidationError(field, "the cursor belongs to another order_by")
    values: list[Any] = data["v"]
    if len(values) != len(keys):
        raise invalid
    checked: list[Any] = []
    for key, value in zip(keys, values, strict=True):
        kind = key.field.kind
        if value is None:
            if kind == "uuid":
                raise invalid
            checked.append(None)
        elif kind in ("json", *NUMBER_KINDS):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid
            if isinstance(value, int) and not -INT64 <= value < INT64:
                raise invalid
            if isinstance(value, float) and not math.isfinite(value):
                raise invalid
            checked.append(value)
        elif not isinstance(value, str) or len(value) > 1000 or _CONTROL.search(value):
            raise invalid
        elif kind == "uuid":
            try:
                checked.append(store.uuid(UUID(value)))
            except ValueError:
                raise invalid from None
        elif kind == "timestamp":
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise invalid from None
            if moment.tzinfo is None:
                raise invalid
            checked.append(store.timestamp(moment))
        else:
            checked.append(value)
    return checked


def _after(compiler: _Compiler, keys: tuple[OrderKey, ...], values: list[Any]) -> str:
    """Rows strictly after ``values`` in the order of ``keys`` (NULLs last in each direction)."""
    false = "false" if compiler.postgres else "0"
    alternatives = []
    for index, key in enumerate(keys):
        if values[index] is None:
            continue  # nothing sorts after NULL in this key: NULLs are last
        terms = []
        for previous, value in zip(keys[:index], values[:index], strict=True):
            expression = compiler.sort_expression(previous.field)
            if value is None:
                terms.append(f"{expression} IS NULL")
            else:
                compiler.params.append(value)
                terms.append(f"{expression} = %s")
        value = values[index]
        beyond = compiler.sort_expression(key.field)
        compiler.params.append(value)
        missing = compiler.sort_expression(key.field)  # binds its own parameters, after value
        later = f"({beyond} {'<' if key.descending else '>'} %s OR {missing} IS NULL)"
        terms.append(later)
        alternatives.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(alternatives) + ")" if alternatives else false


def search_runs(
    store: Store,
    where: str | None = None,
    order_by: str | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    equal: dict[str, str] | None = None,
    fields: tuple[str, str, str] = ("filter", "order_by", "cursor"),
) -> SearchPage:
    """One page of runs matching ``where`` in the order ``order_by`` (default: created_at).

    ``equal`` adds exact matches on columns (``{"status": "completed"}``), as the CLI's
    --status/--pattern/--twin give them. ``fields`` names the inputs in errors (the CLI says
    where/order_by, the API filter/order_by).
    """
    where_field, order_field, cursor_field = fields
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    conditions: list[Node] = []
    if where is not None:
        conditions.append(parse_filter(where, where_field))
    for name, value in (equal or {}).items():
        check_equal(name, value)
        field = resolve_field(name, 0, name)
        token = Token("string", value, 0)
        typed = _typed(field, value, token, name)
        conditions.append(Compare(field, "=", typed, 0))
    keys = _full_order(parse_order_by(order_by, order_field) if order_by else DEFAULT_ORDER)
    filtering = _Compiler(store)
    clauses = [filtering.node(node) for node in conditions]
    if cursor is not None:
        clauses.append(_after(filtering, keys, decode_cursor(store, keys, cursor, cursor_field)))
    sorting = _Compiler(store)
    sort = [sorting.sort_expression(key.field) for key in keys]
    select = ", ".join([f'"{name}"' for name in SIMULATION_RUNS.column_names] + sort)
    order = ", ".join(
        f"{expression} {'DESC' if key.descending else 'ASC'} NULLS LAST"
        for expression, key in zip(sort, keys, strict=True)
    )
    statement = f"SELECT {select} FROM {{t}}"
    if clauses:
        statement += " WHERE " + " AND ".join(clauses)
    statement += f" ORDER BY {order} LIMIT %s"
    # Sort expressions appear in the select list and in ORDER BY: their parameters twice.
    params = [*sorting.params, *filtering.params, *sorting.params, limit + 1]
    kinds = SIMULATION_RUNS.kinds()
    width = len(SIMULATION_RUNS.column_names)
    with store.reading() as db:
        db.execute(store.sql(statement, t=SIMULATION_RUNS.name), params)
        fetched = db.fetchall()
    rows = [
        {
            name: plain(kinds[name], value)
            for name, value in zip(SIMULATION_RUNS.column_names, row[:width], strict=True)
        }
        for row in fetched[:limit]
    ]
    next_cursor = None
    if len(fetched) > limit:
        next_cursor = encode_cursor(keys, list(fetched[limit - 1][width:]))
    return SearchPage(rows, next_cursor)
