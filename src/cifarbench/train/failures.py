"""Which rank, on which node, made a job fail, and who writes the record when rank 0 cannot."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

from ..callbacks.error_log import ErrorLog
from ..errors import error_line
from ..record import mark_abandoned

# how gloo names the peer of a connection that was closed or reset: "... [10.213.0.12]:41527"
PEER_ADDRESS = re.compile(r"\[([0-9a-fA-F.:]+)\]:\d+")


def attribute_failure(run_dir: Path, rank: int, world_size: int, err: Exception,
                      ranks: list[dict[str, Any]]) -> tuple[int, Optional[str], str]:
    """(failed rank, its node, error) for ``err`` raised on ``rank``; when rank 0 is the one lost, the first
    survivor marks the record failed for it."""
    failed_rank, failed_node, error = root_cause(run_dir, rank, world_size, err, ranks)
    if failed_rank == 0 and rank == first_survivor(ranks, failed_node):
        mark_abandoned(run_dir, error, failed_rank=0, failed_node=failed_node)  # rank 0 cannot write it
    return failed_rank, failed_node, error


def root_cause(run_dir: Path, rank: int, world_size: int, err: Exception,
               ranks: list[dict[str, Any]]) -> tuple[int, Optional[str], str]:
    """(rank, its node, error) of what made the job fail: another rank's logged exception, else a peer that this
    rank's failed collective names (a task killed, a node lost: nothing was left to log), else this rank's own
    error.

    A peer's death fails this rank's next collective within moments, so it waits up to 2 s for the peer's log;
    meanwhile, on one machine, the RankWatchdog sees a peer that died without one, records it and ends the job.
    """
    hosts = {r["rank"]: r["host"] for r in ranks}
    for _ in range(20):
        other = sorted((r, text) for r, text in ErrorLog.read(run_dir).items() if r != rank)
        if other:
            return other[0][0], hosts.get(other[0][0]), f"rank {other[0][0]}: {other[0][1]} (rank {rank} then: {type(err).__name__})"
        if world_size == 1:
            break
        time.sleep(0.1)
    lost = lost_peer(err, rank, ranks)
    if lost is not None:
        return lost["rank"], lost["host"], (f"rank {lost['rank']} on {lost['host']} was lost: rank {rank}'s "
                                            f"collective failed with {error_line(err)}")
    return rank, hosts.get(rank), error_line(err)


def lost_peer(err: Exception, rank: int, ranks: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The one other rank at an address ``err`` names, from the ranks table EnvironmentInfo gathered at setup;
    None where the error names no peer, or an address several ranks share (one node, several ranks)."""
    for address in PEER_ADDRESS.findall(str(err)):
        peers = [r for r in ranks if r["address"] == address and r["rank"] != rank]
        if len(peers) == 1:
            return peers[0]
    return None


def first_survivor(ranks: list[dict[str, Any]], lost_node: Optional[str]) -> Optional[int]:
    """The lowest rank on another node than the lost one: it writes the record rank 0 could not."""
    return min((r["rank"] for r in ranks if r["rank"] != 0 and r["host"] != lost_node), default=None)
