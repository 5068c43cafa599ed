"""Assembly: store (wait, migrate), actuator by name, the ControlPlane over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .actuators import Actuator, LocalActuator, NullActuator
from .config import Settings
from .discovery import ClusterFleet
from .service import ControlPlane, utcnow
from .store.db import make_engine, migrate, sessions, wait_for
from .telemetry import Telemetry


@dataclass
class Store:
    """An engine (migrated to head) and its session factory."""

    engine: Engine
    factory: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, attempts: int = 10, delay_s: float = 1.0) -> Store:
    """Return the store at `url` once reachable (retrying), with the schema migrated to head.

    Raises DatabaseUnavailable naming the URL (password hidden) when it stays unreachable.
    """
    engine = make_engine(url)
    wait_for(engine, attempts=attempts, delay_s=delay_s)
    migrate(engine)
    return Store(engine=engine, factory=sessions(engine))


def build_actuator(settings: Settings) -> Actuator:
    """Return the actuator named by `settings.actuator`."""
    if settings.actuator == "local":
        return LocalActuator(settings.local)
    if settings.actuator == "kubernetes":
        from .kube import KubernetesActuator

        return KubernetesActuator(settings.kubernetes)
    return NullActuator()


def build_cluster(settings: Settings) -> ClusterFleet | None:
    """Return the reader of AdaptiveSpeculators when the Kubernetes actuator discovers them, else None."""
    if settings.actuator != "kubernetes" or not settings.kubernetes.discover:
        return None
    from .discovery import ClusterFleet

    return ClusterFleet(settings.kubernetes.namespaces)


def build(
    settings: Settings,
    store: Store,
    actuator: Actuator | None = None,
    clock: Callable[[], datetime] | None = None,
    cluster: ClusterFleet | None = None,
) -> ControlPlane:
    """Return a ControlPlane over `store` (the fleet from `settings` synced in)."""
    cp = ControlPlane(
        settings,
        store.factory,
        actuator if actuator is not None else build_actuator(settings),
        Telemetry(),
        clock=utcnow if clock is None else clock,
        cluster=cluster if cluster is not None else build_cluster(settings),
    )
    cp.sync_fleet(cp.clock())
    return cp
