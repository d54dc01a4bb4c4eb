"""Membership and failure detection by gossip, sans-IO (DESIGN §2: may import ring only; no I/O, no clock).

- `gossiper`: the core a node drives (`Gossiper.tick/handle` -> `Send`/`MemberEvent` effects) and queries.
- `membership`: the view, its merge rules, removal tombstones and the ring winner.
- `detector`: phi accrual over the age of the freshest heartbeat.
- `message`: `Syn`/`Ack`/`Ack2`/`Delta` and the wire codec (`to_wire`/`from_wire`, `WireError`).
"""

from gossip.detector import DetectorConfig, PhiAccrualDetector
from gossip.gossiper import EventKind, GossipConfig, GossipError, Gossiper, MemberEvent, Send
from gossip.membership import RING_KEY, Status
from gossip.message import Ack, Ack2, Delta, Syn, WireError, from_wire, to_wire

__all__ = ["Ack", "Ack2", "Delta", "DetectorConfig", "EventKind", "GossipConfig", "GossipError", "Gossiper",
           "MemberEvent", "PhiAccrualDetector", "RING_KEY", "Send", "Status", "Syn", "WireError", "from_wire",
           "to_wire"]
