"""Subcommands of the operator part: `adaspec operator` and `adaspec dev cluster up|down|env`."""

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

    dev = sub.add_parser("dev", help="developer tools")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="COMMAND")
    dev_sub.required = True
    cluster = dev_sub.add_parser("cluster", help="a local Kubernetes control plane with fake GPU nodes")
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    actions.required = True
    up = actions.add_parser("up", help="start it (building missing binaries); print the kubeconfig path")
    up.add_argument("--gpu-nodes", type=int, default=2, help="kwok nodes with nvidia.com/gpu capacity")
    build = actions.add_parser("build", help="build missing etcd/Kubernetes/kwok binaries into the cache")
    build.set_defaults(func=_build)
    down = actions.add_parser("down", help="stop it and remove its data")
    env = actions.add_parser("env", help="print `export KUBECONFIG=...`")
    for action in (up, down, env):
        action.add_argument("--name", default="dev", help="cluster name (state under the cache directory)")
        action.set_defaults(func=_cluster)


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


def _build(args: argparse.Namespace) -> int:
    from adaspec.operator.devcluster import build

    del args
    for name, path in build.build_all().items():
        print(f"{name} {path}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from adaspec.operator.devcluster import cluster

    state = cluster.state_dir(args.name)
    if args.cluster_command == "up":
        running = cluster.start(state, gpu_nodes=args.gpu_nodes)
        print(running.kubeconfig)
    elif args.cluster_command == "down":
        cluster.stop(state)
    else:
        print(f"export KUBECONFIG={state / 'kubeconfig'}")
    return 0
