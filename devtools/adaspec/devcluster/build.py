"""Builds pinned etcd, Kubernetes, kwok and promtool binaries from their Go modules into a versioned cache."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# Prometheus 3.16.0: the Go module's tags are v0.3MM.P for Prometheus 3.MM.P.
PROMETHEUS_VERSION = "v0.316.0"

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


@dataclass(frozen=True)
class Component:
    """One Go module built into `<cache>/<name>/<version>/bin`."""

    name: str
    module: str
    version: str
    packages: tuple[str, ...]  # main packages; each becomes a binary named after its last path element
    tags: tuple[str, ...] = ()  # Go build tags

    def binaries(self) -> tuple[str, ...]:
        """Return the binary file names this component produces."""
        return tuple(_binary_name(p) for p in self.packages)


def _binary_name(package: str) -> str:
    last = package.rstrip("/").split("/")[-1]
    return "etcd" if re.fullmatch(r"v\d+", last) else last


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, ("go.etcd.io/etcd/server/v3",)),
    Component(
        "k8s",
        "k8s.io/kubernetes",
        KUBERNETES_VERSION,
        tuple(f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS),
    ),
    Component("kwok", "sigs.k8s.io/kwok", KWOK_VERSION, ("sigs.k8s.io/kwok/cmd/kwok",)),
)

# Tools the tests use beside the cluster (`promtool check rules` / `test rules` on manifests/monitoring).
# remove_all_sd leaves out the cloud service discoveries (AWS, Azure, GCE, ...), which promtool's rule
# commands never use: on 2 cores its compile took 245 s with the tag, 566 s without (cold Go build cache).
PROMTOOL = Component(
    "promtool",
    "github.com/prometheus/prometheus",
    PROMETHEUS_VERSION,
    ("github.com/prometheus/prometheus/cmd/promtool",),
    tags=("remove_all_sd",),
)
TOOLS: tuple[Component, ...] = (PROMTOOL,)


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """Return the cache directory: `$ADASPEC_CACHE` or `~/.cache/adaspec`."""
    env = os.environ if env is None else env
    value = env.get("ADASPEC_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "adaspec"


def bin_dir(component: Component, root: Path) -> Path:
    """Return where a component's binaries live in the cache."""
    return root / component.name / component.version / "bin"


# kwok reads its node and pod lifecycles ("stages") from --config; these are the ones kwokctl uses by default.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok_stages_path(root: Path) -> Path:
    """Return the kwok configuration file (the default stages) written next to the kwok binary."""
    kwok = next(c for c in COMPONENTS if c.name == "kwok")
    return bin_dir(kwok, root) / "kwok-stages.yaml"


def is_built(component: Component, root: Path) -> bool:
    """Return True when every binary of the component (and kwok's stages) is in the cache."""
    d = bin_dir(component, root)
    extra = [kwok_stages_path(root)] if component.name == "kwok" else []
    return all((d / b).is_file() for b in component.binaries()) and all(p.is_file() for p in extra)


def go_binary(env: Mapping[str, str] | None = None) -> str:
    """Return the path of the `go` command (PATH first, then /usr/local/go/bin/go)."""
    env = os.environ if env is None else env
    found = shutil.which("go", path=env.get("PATH"))
    if found:
        return found
    if Path("/usr/local/go/bin/go").is_file():
        return "/usr/local/go/bin/go"
    raise FileNotFoundError("the go command is needed to build the test cluster; install Go >= 1.26")


def staging_replaces(kubernetes_go_mod: str, version: str) -> list[str]:
    """Return `replace` lines mapping k8s.io staging modules to their published v0.X.Y versions."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", version)
    if m is None:
        raise ValueError(f"KUBERNETES_VERSION must look like v1.N.M, got {version!r}")
    staging_version = f"v0.{m.group(1)}.{m.group(2)}"
    names = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, flags=re.M)
    return [f"replace {n} => {n} {staging_version}" for n in names]


def _ldflags(component: Component) -> str:
    flags = ["-s", "-w"]
    if component.name == "k8s":
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", component.version)
        assert m is not None  # checked by staging_replaces before any build
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={component.version}",
                f"-X {pkg}.gitMajor={m.group(1)}",
                f"-X {pkg}.gitMinor={m.group(2)}",
                f"-X {pkg}.gitTreeState=clean",
            ]
    if component.name == "promtool":
        m = re.fullmatch(r"v0\.3(\d\d)\.(\d+)", component.version)
        if m is None:
            raise ValueError(f"PROMETHEUS_VERSION must look like v0.3MM.P, got {component.version!r}")
        release = f"3.{int(m.group(1))}.{m.group(2)}"
        flags.append(f"-X github.com/prometheus/common/version.Version={release}")
    return " ".join(flags)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))


@contextmanager
def cache_lock(component: Component, root: Path) -> Iterator[None]:
    """Hold an exclusive lock on one component/version of the cache (`<cache>/<name>/<version>/build.lock`).

    Two builders of the same version share its `src/` and `bin.tmp/` directories, so the lock is held for
    the whole build; a second builder waits here. The kernel drops the lock when its holder dies.
    """
    d = root / component.name / component.version
    d.mkdir(parents=True, exist_ok=True)
    with (d / "build.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


GoBuild = Callable[[Component, Path, int], None]


def build(component: Component, root: Path, *, jobs: int = 2, make: GoBuild | None = None) -> Path:
    """Build one component into the cache unless already there; return its bin directory.

    `make` (default `go_build`) runs under `cache_lock`; a builder that waited for the lock finds the
    binaries built by the one before it and skips.
    """
    out = bin_dir(component, root)
    if is_built(component, root):
        return out
    with cache_lock(component, root):
        if not is_built(component, root):
            (go_build if make is None else make)(component, root, jobs)
    return out


def go_build(component: Component, root: Path, jobs: int) -> None:
    """Build one component's binaries from its Go module into the cache (the caller holds `cache_lock`)."""
    out = bin_dir(component, root)
    go = go_binary()
    src = root / component.name / component.version / "src"
    src.mkdir(parents=True, exist_ok=True)
    log = root / component.name / component.version / "build.log"
    env = dict(os.environ)
    env.update({"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0"})
    go_mod = f"module adaspec.dev/devcluster/{component.name}\n\ngo 1.26\n"
    (src / "go.mod").write_text(go_mod)
    (src / "go.sum").unlink(missing_ok=True)
    started = time.monotonic()
    if component.name == "k8s":
        _run([go, "mod", "download", f"{component.module}@{component.version}"], src, env, log)
        modfile = subprocess.run(
            [go, "mod", "download", "-json", f"{component.module}@{component.version}"],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        gomod_path = re.search(r'"GoMod":\s*"([^"]+)"', modfile)
        if gomod_path is None:
            raise RuntimeError(f"go mod download gave no GoMod for {component.module}")
        replaces = staging_replaces(Path(gomod_path.group(1)).read_text(), component.version)
        (src / "go.mod").write_text(go_mod + "\n" + "\n".join(replaces) + "\n")
    _run([go, "get", *(f"{p}@{component.version}" for p in component.packages)], src, env, log)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    target = f"{tmp}/" if len(component.packages) > 1 else str(tmp / component.binaries()[0])
    cmd = [go, "build", "-p", str(jobs), "-trimpath", f"-ldflags={_ldflags(component)}", "-o", target]
    if component.tags:
        cmd.insert(2, f"-tags={','.join(component.tags)}")
    _run([*cmd, *component.packages], src, env, log)
    for b in component.binaries():
        (tmp / b).replace(out / b)
    shutil.rmtree(tmp, ignore_errors=True)
    if component.name == "kwok":
        listed = subprocess.run(
            [go, "list", "-m", "-f", "{{.Dir}}", component.module],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        docs = [(Path(listed) / f).read_text().strip() for f in KWOK_STAGES]
        kwok_stages_path(root).write_text("\n---\n".join(docs) + "\n")
    with log.open("a") as fh:
        fh.write(f"built {component.name} {component.version} in {time.monotonic() - started:.0f}s\n")


def build_all(
    root: Path | None = None, *, jobs: int = 2, components: tuple[Component, ...] = COMPONENTS
) -> dict[str, Path]:
    """Build every missing component (the cluster's by default), one at a time; return binary name -> path."""
    root = cache_root() if root is None else root
    paths: dict[str, Path] = {}
    for component in components:
        d = build(component, root, jobs=jobs)
        paths.update({b: d / b for b in component.binaries()})
    return paths


def binary_paths(root: Path | None = None) -> dict[str, Path]:
    """Return binary name -> cached path for every cluster component (built or not)."""
    root = cache_root() if root is None else root
    return {b: bin_dir(c, root) / b for c in COMPONENTS for b in c.binaries()}


def promtool(root: Path | None = None, *, jobs: int = 2) -> Path:
    """Return the cached promtool, building it first when missing (raises when the build fails)."""
    root = cache_root() if root is None else root
    return build(PROMTOOL, root, jobs=jobs) / "promtool"


if __name__ == "__main__":
    for name, path in build_all(components=COMPONENTS + TOOLS).items():
        print(name, path)
