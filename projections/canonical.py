"""Canonical JSON: the one form of JSON in the read tables and in the CLI's output.

- object keys sorted (by code point), at every level;
- no whitespace;
- integers as integers, floats exactly as the event codec (msgspec) prints them: the shortest
  text that reads back as the same float (``0.1``, ``1.0``, ``4.6e18``);
- strings as msgspec escapes them.

The events are encoded by msgspec too (infrastructure/codec.py), so decoding a stored event's
JSON and encoding it again here keeps every number's text and only sorts the keys. Canonical
text is a fixed point: canonicalising it again gives the same bytes.

Both back ends store this text as it is: SQLite in a TEXT column, PostgreSQL in a ``json``
column (which keeps its input text verbatim). ``jsonb`` is not used for storage because it
cannot give the text back: it reorders keys and prints numbers as decimals, so the float
4.6e18 would come back as 4600000000000000000, an integer to every JSON reader. Containment
queries (``@>``) cast to jsonb, ``data::jsonb``, which the GIN index of simulation_results
is built on (docs/queries.md).
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.Decoder().decode


def canonical(value: Any) -> bytes:
    """A Python value (dicts, lists, str, int, float, bool, None, Structs) as canonical JSON."""
    return _encode(value)


def canonical_text(json: bytes | bytearray | memoryview | str | msgspec.Raw) -> bytes:
    """JSON text (a stored event's bytes, say) in canonical form."""
    if isinstance(json, msgspec.Raw):
        json = bytes(json)
    return _encode(_decode(json))


def decode(json: bytes | str) -> Any:
    """JSON text as Python values: integers as int, the other numbers as float."""
    return _decode(json)
