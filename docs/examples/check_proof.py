"""Check a TwinLedger proof against a digest kept elsewhere, with hashlib and json alone.

    python3 check_proof.py proof.json DIGEST      # exit 0: holds, 1: does not (says why)

The algorithm (docs/integrity.md):
    framing(e) = id (16 bytes) || u64 version || u32 len(topic) || topic || u64 len(state) || state
    hash_0 = 32 zero bytes;  hash_n = SHA-256(hash_{n-1} || framing(e_n))
    leaf = SHA-256(0x00 || id || u64 head version || head hash)
    node = SHA-256(0x01 || left || right), folded up the audit path to the digest.
All integers big-endian; topic UTF-8; state the stored bytes (the proof's "state" in UTF-8,
or its "state_base64" decoded, for a compact binary state).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys


def u(value, size):
    return value.to_bytes(size, "big")


def check(proof, digest):
    """None if the proof holds against digest, else why not."""
    ident = bytes.fromhex(proof["stream"].replace("-", ""))
    head, version = bytes(32), 0
    for event in proof["events"]:
        version += 1
        if event["originator_version"] != version:
            return f"the events skip version {version}"
        topic = event["topic"].encode()
        if "state_base64" in event:  # a compact (binary) stored state
            state = base64.b64decode(event["state_base64"])
        else:
            state = event["state"].encode()
        framing = ident + u(version, 8) + u(len(topic), 4) + topic + u(len(state), 8) + state
        head = hashlib.sha256(head + framing).digest()
        if head.hex() != event["hash"]:
            return f"version {version} does not match its hash"
    if version == 0:
        return "the proof holds no event"
    top = hashlib.sha256(b"\x00" + ident + u(version, 8) + head).digest()
    for step in proof["path"]:
        sibling = bytes.fromhex(step["hash"])
        pair = sibling + top if step["side"] == "left" else top + sibling
        top = hashlib.sha256(b"\x01" + pair).digest()
    if top.hex() != digest.strip().lower():
        return "the stream's head does not lead to the digest"
    return None


def main():
    if len(sys.argv) != 3:
        print("usage: check_proof.py PROOF.json DIGEST", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as file:
        proof = json.load(file)
    problem = check(proof, sys.argv[2])
    if problem:
        print(f"proof does NOT hold: {problem}")
        return 1
    events = len(proof["events"])
    print(f"proof holds: stream {proof['stream']}, {events} events, digest {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
