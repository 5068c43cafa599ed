"""Subcommand of the operator part: `adaspec operator`."""

from __future__ import annotations

import argparse
import hashlib
import socket
from typing import Any


def register(sub: Any) -> None:
    """Add this part's subcommands to the `adaspec` parser."""
    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument("--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    op.add_argument(
        "--peering",
        default=None,
        help="kopf peering object for active/passive replicas (required to exist when named; "
        "manifests/ uses the ClusterKopfPeering 'adaspec')",
    )
    op.add_argument("--standalone", action="store_true", help="run without peering")
    op.add_argument(
        "--priority",
        type=peering_priority,
        default=0,
        help="peering priority: the highest live one is active, the others wait; 'auto' derives a distinct "
        "one from the host (pod) name, so that replicas of one Deployment are active/passive",
    )
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.set_defaults(func=_operator)


def peering_priority(value: str, hostname: str | None = None) -> int:
    """Return a peering priority: an integer as given, or for 'auto' one derived from the host name."""
    if value != "auto":
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--priority must be an integer or 'auto', got {value!r}"
            ) from None
    name = hostname if hostname is not None else socket.gethostname()
    return 1 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % 1_000_000


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from adaspec.operator import handlers

    del handlers  # imported for its registrations
    kopf.configure(verbose=False, log_prefix=True)  # every object's log line names it: [ns/name]
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        peering_name=args.peering,
        standalone=args.standalone,
        priority=args.priority,
        liveness_endpoint=args.liveness,
    )
    return 0
