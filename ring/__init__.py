"""The ring: Q fixed partitions of the 128-bit MurmurHash3 space, their owners, and how that changes.

Pure and sans-IO: no clock, no sockets, no global random, nothing of ours imported (DESIGN §2).
Layers inside: hashing -> spacing -> matching / template / layout / draft / relaxation -> claim -> state
-> preflist / transfer / report.
"""

from ring.claim import ClaimError, claim_join, claim_leave, initial_claim, ownership_bounds
from ring.hashing import PARTITIONS_DEFAULT, key_hash, partition_for_key, partition_of
from ring.preflist import Preflist, Replica, preference_list, replicas_of_partition
from ring.report import OwnershipReport, ownership_report
from ring.spacing import TARGET_N_DEFAULT, violations_min, window_violations
from ring.state import Ring, RingFormatError, merge
from ring.transfer import ReplicaChange, Transfer, replica_changes, transfer_plan

__all__ = [
    "ClaimError", "OwnershipReport", "PARTITIONS_DEFAULT", "Preflist", "Replica", "ReplicaChange", "Ring",
    "RingFormatError", "TARGET_N_DEFAULT", "Transfer", "claim_join", "claim_leave", "initial_claim",
    "key_hash", "merge", "ownership_bounds", "ownership_report", "partition_for_key", "partition_of",
    "preference_list", "replica_changes", "replicas_of_partition", "transfer_plan", "violations_min",
    "window_violations",
]
