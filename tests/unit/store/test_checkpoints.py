"""Signed checkpoints, without a database: signing, the file, and the check a third
party runs on an export. The invariant is a property: an export verifies exactly
when every event up to its latest checkpoint is the one that was signed."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.store import checkpoints as cps
from warden.store.audit import GENESIS, chain_hash
from warden.store.checkpoints import Checkpoint, CheckpointError

KEY = Ed25519PrivateKey.from_private_bytes(b"s" * 32)
PUBLIC = KEY.public_key()
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def chain(n: int, *, actor_at: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """``n`` events as an export holds them; ``actor_at`` rewrites some, hashes recomputed."""
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        ev = {"seq": seq, "ts": (T0 + timedelta(seconds=seq)).isoformat(timespec="microseconds"),
              "workspace_id": "ws_1", "actor": (actor_at or {}).get(seq, "alice"), "action": "thing.done",
              "target": None, "data": {"i": seq, "note": "ünïcode"}, "prev_hash": prev}
        ev["hash"] = prev = chain_hash(prev, seq, ev["ts"], ev["workspace_id"], ev["actor"], ev["action"],
                                       ev["target"], ev["data"])
        events.append(ev)
    return events


def export(events: list[dict[str, Any]], signed: list[Checkpoint]) -> list[bytes]:
    lines = [orjson.dumps({"format": cps.EXPORT_FORMAT, "public_key": cps.public_key_text(PUBLIC)})]
    lines += [orjson.dumps({"checkpoint": cp.to_dict()}) for cp in signed]
    return lines + [orjson.dumps(ev) for ev in events]


def sign_at(events: list[dict[str, Any]], seqs: list[int]) -> list[Checkpoint]:
    return [cps.sign(KEY, s, events[s - 1]["hash"]) for s in seqs]


@st.composite
def signed_chains(draw: st.DrawFn) -> tuple[int, list[int]]:
    n = draw(st.integers(1, 25))
    return n, sorted(draw(st.sets(st.integers(1, n), min_size=1, max_size=4)))


@settings(max_examples=150, deadline=None)
@given(signed_chains(), st.data())
def test_an_export_verifies_exactly_when_its_anchored_events_are_the_signed_ones(shape, data) -> None:
    n, seqs = shape
    honest = chain(n)
    signed = sign_at(honest, seqs)
    top = max(seqs)
    result = cps.verify_export(export(honest, signed), PUBLIC)
    assert result.ok and (result.count, result.anchored_seq, result.checkpoints) == (n, top, len(seqs))

    # Truncating the tail (what moving audit_head back amounts to): refused below the top checkpoint.
    keep = data.draw(st.integers(0, n - 1), label="keep")
    truncated = cps.verify_export(export(honest[:keep], signed), PUBLIC)
    assert truncated.ok is (keep >= top)
    if not truncated.ok:
        assert truncated.broken_seq == keep + 1 and "tail was deleted" in truncated.reason

    # Rewriting one event and recomputing every later hash: refused at or before the top checkpoint.
    k = data.draw(st.integers(1, n), label="rewritten")
    rewritten = cps.verify_export(export(chain(n, actor_at={k: "mallory"}), signed), PUBLIC)
    assert rewritten.ok is (k > top)
    if not rewritten.ok:
        first_after = min(s for s in seqs if s >= k)
        assert rewritten.broken_seq == first_after and "recomputed" in rewritten.reason
        assert rewritten.count == max((s for s in seqs if s < k), default=0)

    # Rewriting without recomputing: the chain itself breaks, anchored or not.
    tampered = [dict(ev) for ev in honest]
    tampered[k - 1]["actor"] = "mallory"
    broken = cps.verify_export(export(tampered, signed), PUBLIC)
    assert (broken.ok, broken.broken_seq, broken.reason) == (False, k, "content does not match its hash")


def test_a_checkpoint_signed_by_another_key_or_altered_is_refused() -> None:
    events = chain(3)
    other = Ed25519PrivateKey.generate()
    foreign = cps.sign(other, 3, events[2]["hash"])
    r = cps.verify_export(export(events, [foreign]), PUBLIC)
    assert not r.ok and f"key {cps.key_id(other)}, not this key ({cps.key_id(PUBLIC)})" in r.reason
    honest = cps.sign(KEY, 3, events[2]["hash"])
    moved_back = Checkpoint(2, events[1]["hash"], honest.ts, honest.key_id, honest.sig)
    r = cps.verify_export(export(events, [moved_back]), PUBLIC)
    assert not r.ok and "does not verify with this key" in r.reason


def test_what_an_export_must_be() -> None:
    events = chain(2)
    signed = sign_at(events, [2])
    assert "holds no checkpoint" in cps.verify_export(export(events, []), PUBLIC).reason
    assert "not a signed export" in cps.verify_export([b'{"seq": 1}'], PUBLIC).reason
    assert "not a signed export" in cps.verify_export([], PUBLIC).reason
    other = cps.parse_public_key(cps.public_key_text(Ed25519PrivateKey.generate()))
    assert "another public key" in cps.verify_export(export(events, signed), other).reason
    lines = export(events, signed)
    assert "line 4 is neither" in cps.verify_export([*lines[:3], b"garbage", *lines[3:]], PUBLIC).reason
    # A checkpoint after the events is not accepted as one.
    late = [lines[0], *lines[2:], lines[1]]
    assert "neither a checkpoint (before the events) nor an event" in cps.verify_export(late, PUBLIC).reason
    bad_event = [*lines[:2], orjson.dumps({**events[0], "data": None, "seq": "1"})]
    assert not cps.verify_export(bad_event, PUBLIC).ok
    repeated = [*lines, lines[-1]]
    assert cps.verify_export(repeated, PUBLIC).reason == "event out of order or repeated"
    # Text lines (a file opened in text mode) verify the same.
    assert cps.verify_export([line.decode() for line in lines], PUBLIC).ok


def test_public_keys_parse_or_name_their_form() -> None:
    assert cps.key_id(cps.parse_public_key(cps.public_key_text(KEY))) == cps.key_id(KEY)
    for bad in ("", "not base64!", "c2hvcnQ="):
        with pytest.raises(CheckpointError, match="base64 of exactly 32 bytes"):
            cps.parse_public_key(bad)


@pytest.mark.parametrize("value", [
    None, [], {"seq": 1}, {"seq": 0, "hash": "h", "ts": "t", "key_id": "k", "sig": "s"},
    {"seq": True, "hash": "h", "ts": "t", "key_id": "k", "sig": "s"},
    {"seq": 1, "hash": 5, "ts": "t", "key_id": "k", "sig": "s"},
    {"seq": 1, "hash": "h", "ts": "t", "key_id": "k", "sig": "s", "extra": 1},
])
def test_only_a_whole_checkpoint_parses(value: object) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.of(value)


def test_a_garbled_signature_does_not_verify() -> None:
    cp = cps.sign(KEY, 1, "a" * 64)
    assert cp.signed_by(PUBLIC)
    for sig in ("!!", "", cp.sig[:-4] + "AAA="):
        assert not Checkpoint(cp.seq, cp.hash, cp.ts, cp.key_id, sig).signed_by(PUBLIC)


# --- the file ----------------------------------------------------------------------


def test_the_file_is_appended_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cp.jsonl"
    assert cps.load(path) == [] and cps.latest(path, KEY) is None
    written = [cps.sign(KEY, s, f"{s:064x}") for s in (1, 5, 3)]  # workers may append out of order
    for cp in written:
        cps.append(path, cp)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cps.load(path) == written
    assert cps.latest(path, KEY) == written[1]
    cps.append(path, cps.sign(Ed25519PrivateKey.generate(), 9, "f" * 64))
    assert cps.latest(path, KEY) == written[1]  # only this key's checkpoints count
    with path.open("ab") as f:
        f.write(b"{torn\n")
    with pytest.raises(CheckpointError, match="line 5 is not a checkpoint"):
        cps.load(path)
    assert cps.latest(path, KEY) == written[1]  # signing goes on; verify names the line


def test_latest_reads_only_the_tail_of_a_long_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.jsonl"
    for s in range(1, 401):
        cps.append(path, cps.sign(KEY, s, f"{s:064x}"))
    assert path.stat().st_size > 4096
    assert cps.latest(path, KEY, tail_bytes=4096).seq == 400
