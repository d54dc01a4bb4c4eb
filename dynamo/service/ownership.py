"""Ownership handoff: during a ring change, stream each moving key-partition from its source to its target.

Theory of operation
- Every `interval_s` the driver looks at the ring change under way (Membership.transition, set by
  claimant.py) and starts a stream for each move this node sources and has not finished, at most
  `streams_max` at a time, once the change has been known here for `settle_s`: by then every coordinator
  has heard of it and also sends new writes of the partition to its pending owner, so a key the stream has
  passed does not miss a later write.
- A stream reads the partition in key order (Backend.scan after the cursor), `batch_keys` keys a batch,
  and sends each batch as "kv.transfer" [version, partition, items]; at most `window` batches are in
  flight (flow control: a slow target slows the stream, nothing piles up). The target merges a batch
  durably (Replica.merge_many) before it answers. The cursor is the last key of the longest run of
  acknowledged batches from the start; it is kept in memory and in transfers.json (rewritten at most every
  `cursor_save_s`, and at the end), so a stream cut by a failure or a restart resumes there. Sending a
  batch twice is harmless: merging is idempotent.
- When the last batch is acknowledged the move is done: Claimant.mark_handed publishes it by gossip, and
  every node routes the partition by the next ring once all its moves are done. Done moves are kept in
  transfers.json too, so a restart does not stream them again.
- A failure (target down, timeout, storage) ends the stream; it resumes from the cursor a round later,
  after a backoff that doubles up to `backoff_max_s`.
- Cleanup: `cleanup_delay_s` after a change settled here (time for every node to route by the new ring),
  the copies of partitions this node no longer replicates (under any n_val in use) are dropped, a page at
  a time, each only if unchanged and not hinted (Replica.drop_if); one holding dots of the node's current
  actor only after that actor is retired (forgetting.py). A new change stops it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
from typing import Any, Callable

import trio

from dynamo.rpc import PeerPool, RpcError
from dynamo.service.claimant import Claimant
from dynamo.service.forgetting import Forgetting
from dynamo.service.membership import Membership
from dynamo.service.replica import BUCKET_BYTES_MAX, KEY_BYTES_MAX, Replica
from dynamo.storage import Backend, StorageError
from ring.change import Move
from ring.preflist import replicas_of_partition

TRANSFER_TYPE = "kv.transfer"
TRANSFER_FILE = "transfers.json"
log = logging.getLogger("dynamo.ownership")


class StaleTransition(RpcError):
    """The ring change a stream belonged to ended or was replaced while it ran."""


@dataclasses.dataclass
class Progress:
    """One move as this node sees it: where its stream is and what it has sent."""

    move: Move
    cursor: tuple[bytes, bytes] | None = None
    keys_sent: int = 0
    bytes_sent: int = 0
    batches: int = 0
    done: bool = False
    active: bool = False
    failures: int = 0
    retry_at_s: float = -math.inf
    started_s: float | None = None
    finished_s: float | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    batch_keys: int = 256
    window: int = 4
    streams_max: int = 2
    interval_s: float = 0.5
    settle_s: float = 1.0
    timeout_s: float = 10.0
    backoff_max_s: float = 10.0
    cursor_save_s: float = 1.0
    cleanup_delay_s: float = 10.0


class Ownership:
    def __init__(self, node_id: str, membership: Membership, claimant: Claimant, replica: Replica, pool: PeerPool,
                 backend: Backend, settings: TransferSettings, state_dir: str | None, forgetting: Forgetting,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.node_id, self.membership, self.claimant = node_id, membership, claimant
        self.forgetting = forgetting  # how cleanup drops copies holding this node's dots
        self.replica, self.pool, self.backend, self.settings = replica, pool, backend, settings
        self.state_dir = state_dir
        self.log = logger or logging.LoggerAdapter(log, {})
        self.version: int | None = None       # the transition the progress below belongs to
        self.progress: dict[tuple[int, str], Progress] = {}
        self._seen_at_s = 0.0
        self._saved_at_s = -math.inf
        self.keys_received = self.bytes_received = self.batches_received = 0
        self._loaded = _load(state_dir)
        self._nursery: trio.Nursery | None = None
        self.n_vals: Callable[[], set[int]] = lambda: {3}
        self._cleaned_version = membership.ring.version  # start-up: a change that settled before is done
        self._settled_at_s: float | None = None
        self._cleaning = False
        self.keys_dropped = 0

    # ---- the driver ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self.round(nursery)
                await trio.sleep(self.settings.interval_s)

    def round(self, nursery: trio.Nursery) -> None:
        """Track the transition under way and start the streams that are due."""
        transition = self.membership.transition
        now_s = trio.current_time()
        if transition is None:
            if self.version is not None:
                self.version = None
                self._save(force=True)
            self._maybe_clean(nursery, now_s)
            return
        self._settled_at_s = None
        if transition.version != self.version:
            self._adopt(transition.version, [m for m in transition.moves if m.source == self.node_id], now_s)
        if now_s < self._seen_at_s + self.settings.settle_s:
            return
        active = sum(1 for p in self.progress.values() if p.active)
        for progress in self.progress.values():
            if active >= self.settings.streams_max:
                break
            if not progress.done and not progress.active and now_s >= progress.retry_at_s \
                    and progress.move.target not in self.membership.down:
                progress.active = True
                active += 1
                nursery.start_soon(self._stream, transition.version, progress)

    def _adopt(self, version: int, moves: list[Move], now_s: float) -> None:
        self.version, self._seen_at_s = version, now_s
        self.progress = {(m.partition, m.target): Progress(m) for m in moves}
        loaded = self._loaded if self._loaded.get("version") == version else {}
        for (k, target), progress in self.progress.items():
            if [k, target] in loaded.get("done", []):
                progress.done = True
                self.claimant.mark_handed(version, (k, target))
            cursor = loaded.get("cursors", {}).get(f"{k}:{target}")
            if cursor is not None:
                progress.cursor = (bytes.fromhex(cursor[0]), bytes.fromhex(cursor[1]))
        if moves:
            self.log.info("ring v%d: %d partitions to hand off from here", version, len(moves))

    async def _stream(self, version: int, progress: Progress) -> None:
        move = progress.move
        progress.started_s = progress.started_s or trio.current_time()
        try:
            await self._send_all(version, progress)
        except (RpcError, StorageError, OSError) as error:
            progress.failures += 1
            progress.error = str(error)
            delay_s = min(self.settings.backoff_max_s, self.settings.interval_s * 2 ** min(progress.failures, 20))
            progress.retry_at_s = trio.current_time() + delay_s
            self.log.info("handoff of partition %d to %s stopped at %d keys (%s); resuming in %.1fs",
                          move.partition, move.target, progress.keys_sent, error, delay_s)
        else:
            if self.version == version:
                progress.done, progress.error = True, ""
                progress.finished_s = trio.current_time()
                self._save(force=True)
                self.claimant.mark_handed(version, (move.partition, move.target))
                self.log.info("handed partition %d to %s: %d keys", move.partition, move.target,
                              progress.keys_sent)
        finally:
            progress.active = False
            if self._nursery is not None:  # the next stream starts now, not at the next round
                self.round(self._nursery)

    async def _send_all(self, version: int, progress: Progress) -> None:
        """Stream from the cursor to the end with at most `window` batches unacknowledged."""
        settings, move = self.settings, progress.move
        window = trio.Semaphore(settings.window)
        acked: dict[int, tuple[bytes, bytes]] = {}
        state = {"next": 0, "error": None}
        after = progress.cursor
        async with trio.open_nursery() as nursery:
            seq = 0
            while state["error"] is None and self.version == version:
                page = self.backend.scan(move.partition, after, settings.batch_keys)
                if not page:
                    break
                after = (page[-1][0], page[-1][1])
                await window.acquire()
                nursery.start_soon(self._send_batch, version, progress, seq, page, window, acked, state)
                seq += 1
                if len(page) < settings.batch_keys:
                    break
        if state["error"] is not None:
            raise state["error"]
        if self.version != version:
            raise StaleTransition(f"the ring change v{version} is over or replaced")

    async def _send_batch(self, version: int, progress: Progress, seq: int, page: list, window: trio.Semaphore,
                          acked: dict[int, tuple[bytes, bytes]], state: dict[str, Any]) -> None:
        move = progress.move
        try:
            if state["error"] is not None:
                return
            items = [[bucket, key, blob] for bucket, key, blob in page]
            await self.pool.call(move.target, TRANSFER_TYPE, [version, move.partition, items],
                                 self.settings.timeout_s)
            progress.keys_sent += len(page)
            progress.bytes_sent += sum(len(blob) for _, _, blob in page)
            progress.batches += 1
            acked[seq] = (page[-1][0], page[-1][1])
            while state["next"] in acked:  # the cursor only passes batches with every earlier one acked
                progress.cursor = acked.pop(state["next"])
                state["next"] += 1
            self._save()
        except (RpcError, StorageError, OSError) as error:
            state["error"] = state["error"] or error
        finally:
            window.release()

    # ---- cleanup after a change -------------------------------------------------------------------------

    def _maybe_clean(self, nursery: trio.Nursery, now_s: float) -> None:
        ring = self.membership.ring
        if ring.version <= self._cleaned_version or self._cleaning:
            return
        if self._settled_at_s is None:
            self._settled_at_s = now_s
        if now_s >= self._settled_at_s + self.settings.cleanup_delay_s:
            self._cleaning = True
            nursery.start_soon(self._clean, ring.version)

    async def _clean(self, version: int) -> None:
        try:
            ring, n_vals = self.membership.ring, self.n_vals()
            for partition in sorted(self.backend.partitions()):
                if any(self.node_id in replicas_of_partition(ring, partition, n) for n in n_vals):
                    continue
                after = None
                while self.membership.transition is None and self.membership.ring.version == version:
                    page = self.backend.scan(partition, after, self.settings.batch_keys)
                    for bucket, key, blob in page:
                        if await self.replica.drop_if(bucket, key, blob, self.forgetting.may_forget):
                            self.keys_dropped += 1
                    if len(page) < self.settings.batch_keys:
                        break
                    after = (page[-1][0], page[-1][1])
            if self.membership.ring.version == version and self.membership.transition is None:
                self._cleaned_version = version
                self.log.info("ring v%d: dropped the copies no longer replicated here (%d keys so far)",
                              version, self.keys_dropped)
        except StorageError as error:
            self.log.warning("cleanup after ring v%d stopped: %s", version, error)
        finally:
            self._cleaning = False

    # ---- the target's side --------------------------------------------------------------------------

    async def rpc_transfer(self, peer_id: str, body: Any) -> int:
        """Merge one batch of a handoff durably, then answer (the source then moves its cursor past it)."""
        if not isinstance(body, list) or len(body) != 3 or type(body[0]) is not int or type(body[1]) is not int \
                or not isinstance(body[2], list):
            raise ValueError("kv.transfer wants [version, partition, [[bucket, key, blob], ...]]")
        items = []
        for item in body[2]:
            bucket, key, blob = item
            if type(bucket) is not bytes or type(key) is not bytes or type(blob) is not bytes \
                    or len(bucket) > BUCKET_BYTES_MAX or len(key) > KEY_BYTES_MAX:
                raise ValueError("kv.transfer items are [bucket, key, blob] of bytes within the size limits")
            items.append((bucket, key, blob))
        if items:
            await self.replica.merge_many(items)
        self.keys_received += len(items)
        self.bytes_received += sum(len(blob) for _, _, blob in items)
        self.batches_received += 1
        return len(items)

    # ---- durable progress and reports ---------------------------------------------------------------

    def _save(self, force: bool = False) -> None:
        now_s = trio.current_time()
        if self.state_dir is None or (not force and now_s < self._saved_at_s + self.settings.cursor_save_s):
            return
        self._saved_at_s = now_s
        state = {"version": self.version,
                 "done": sorted([k, t] for (k, t), p in self.progress.items() if p.done),
                 "cursors": {f"{k}:{t}": [p.cursor[0].hex(), p.cursor[1].hex()]
                             for (k, t), p in self.progress.items() if p.cursor is not None and not p.done}}
        path = pathlib.Path(self.state_dir) / TRANSFER_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(state))
            os.replace(temporary, path)  # no fsync: a lost cursor only means sending some keys again
        except OSError as error:
            self.log.warning("cannot save %s: %s", TRANSFER_FILE, error)
        self._loaded = state

    def gauges(self) -> dict[str, int]:
        """For /stats: the moves of the change under way not done yet, and this node's transfer counts."""
        transition, done = self.membership.transition, self.membership.done
        remaining = 0 if transition is None else sum(1 for m in transition.moves if not transition.move_done(m, done))
        return {"transfers_remaining": remaining,
                "transfer_keys_sent": sum(p.keys_sent for p in self.progress.values()),
                "transfer_keys_received": self.keys_received, "transfer_keys_dropped": self.keys_dropped}

    def report(self) -> dict[str, Any]:
        """GET /admin/transfers: every move of the change under way, with this node's own streams' detail."""
        membership = self.membership
        transition, done = membership.transition, membership.done
        now_s = trio.current_time()
        moves = []
        for move in transition.moves if transition is not None else ():
            entry: dict[str, Any] = {"partition": move.partition, "source": move.source, "target": move.target,
                                     "state": "done" if transition.move_done(move, done) else "waiting"}
            progress = self.progress.get((move.partition, move.target)) if move.source == self.node_id else None
            if progress is not None:
                if progress.active:
                    entry["state"] = "active"
                elif progress.done:
                    entry["state"] = "done"
                entry.update(_detail(progress, now_s))
            moves.append(entry)
        finished = sum(1 for entry in moves if entry["state"] == "done")
        return {"node": self.node_id, "ring_version": membership.ring.version,
                "next_version": transition.version if transition is not None else None,
                "moves": moves, "done": finished, "remaining": len(moves) - finished,
                "sent": {"keys": sum(p.keys_sent for p in self.progress.values()),
                         "bytes": sum(p.bytes_sent for p in self.progress.values())},
                "received": {"keys": self.keys_received, "bytes": self.bytes_received,
                             "batches": self.batches_received}}


def _detail(progress: Progress, now_s: float) -> dict[str, Any]:
    elapsed_s = ((progress.finished_s or now_s) - progress.started_s) if progress.started_s is not None else 0.0
    return {"keys_sent": progress.keys_sent, "bytes_sent": progress.bytes_sent, "batches": progress.batches,
            "keys_per_s": round(progress.keys_sent / elapsed_s, 1) if elapsed_s > 0 else None,
            "error": progress.error or None}


def _load(state_dir: str | None) -> dict[str, Any]:
    if state_dir is None:
        return {}
    try:
        state = json.loads((pathlib.Path(state_dir) / TRANSFER_FILE).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def build_ownership(node: Any, state_dir: str | None) -> tuple[Claimant, Ownership]:
    """The node's claimant and handoff driver, wired to its parts (node is a dynamo.node.Node)."""
    config = node.config

    def n_vals() -> set[int]:
        return {config.n_val} | {entry.props.n_val for _, entry in node.registry.items()}

    claimant = Claimant(node.membership, node.pool, n_vals=n_vals, keys_stored=node.backend.count,
                        state_dir=state_dir, logger=node.log)
    settings = TransferSettings(batch_keys=config.transfer_batch_keys, window=config.transfer_window,
                                streams_max=config.transfer_streams_max, interval_s=config.handoff_interval_s,
                                settle_s=3 * config.gossip_interval_s, timeout_s=config.request_timeout_s,
                                backoff_max_s=config.handoff_backoff_max_s,
                                cleanup_delay_s=10 * config.gossip_interval_s)
    ownership = Ownership(config.node_id, node.membership, claimant, node.replica, node.pool, node.backend,
                          settings, state_dir, node.forgetting, logger=node.log)
    ownership.n_vals = n_vals
    return claimant, ownership
