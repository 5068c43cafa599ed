"""Subcommands of the developer tools: `adaspec dev cluster up|build|down|env`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add `adaspec dev ...` to the `adaspec` parser."""
    dev = sub.add_parser("dev", help="developer tools")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="COMMAND")
    dev_sub.required = True
    cluster = dev_sub.add_parser("cluster", help="a local Kubernetes control plane with fake GPU nodes")
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    actions.required = True
    up = actions.add_parser("up", help="start it (building missing binaries); print the kubeconfig path")
    up.add_argument("--gpu-nodes", type=int, default=2, help="kwok nodes with nvidia.com/gpu capacity")
    build = actions.add_parser(
        "build", help="build missing etcd/Kubernetes/kwok binaries and promtool into the cache"
    )
    build.set_defaults(func=_build)
    down = actions.add_parser("down", help="stop it and remove its data")
    env = actions.add_parser("env", help="print `export KUBECONFIG=...`")
    for action in (up, down, env):
        action.add_argument("--name", default="dev", help="cluster name (state under the cache directory)")
        action.set_defaults(func=_cluster)


def _build(args: argparse.Namespace) -> int:
    from adaspec.devcluster import build

    del args
    for name, path in build.build_all(components=build.COMPONENTS + build.TOOLS).items():
        print(f"{name} {path}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from adaspec.devcluster import cluster

    state = cluster.state_dir(args.name)
    if args.cluster_command == "up":
        running = cluster.start(state, gpu_nodes=args.gpu_nodes)
        print(running.kubeconfig)
    elif args.cluster_command == "down":
        cluster.stop(state)
    else:
        print(f"export KUBECONFIG={state / 'kubeconfig'}")
    return 0
