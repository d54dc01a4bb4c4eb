"""Forgetting a local copy without ever minting one of its dots again.

A node's copy of a key is how it remembers its own counter for that key: if it drops a copy holding a dot
(actor, n) of its current actor, a later write coordinated here would start again below n and mint a dot
some replica already holds for another value. So before such a copy goes, the node retires the actor (a
new incarnation, written durably first: node.py); the old actor never mints again, and the copy may go.
Copies holding only other actors' dots, or retired actors' dots, may go at once.

Used wherever a node drops copies it no longer needs: after hinted handoff (handoff.py), after a ring
change (ownership.py) and when reaping tombstones (reaper.py). A retirement costs one fsync and adds one
actor to the clocks of keys written afterwards; it happens at most once per batch of drops in practice,
since after it no stored copy holds the new actor's dots until this node coordinates again.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from dynamo.object import StoredObject


class Forgetting:
    def __init__(self, actor: Callable[[], str], retire_actor: Callable[[], Any],
                 log: logging.LoggerAdapter) -> None:
        self.actor, self.retire_actor, self.log = actor, retire_actor, log
        self.retirements = 0

    def may_forget(self, obj: StoredObject) -> bool:
        """Make it safe to drop `obj`: retire the current actor first if `obj` holds its dots. False only
        when that retirement failed (the copy must stay)."""
        actor = self.actor()
        if any(entry.actor == actor for entry in obj.clock.entries):
            try:
                self.retire_actor()
            except Exception:  # node.json not writable: keep the copy rather than risk a dot twice
                self.log.exception("cannot retire actor %s: keeping a copy that holds its dots", actor)
                return False
            self.retirements += 1
            self.log.info("retired actor %s before dropping a copy that holds its dots", actor)
        return True
