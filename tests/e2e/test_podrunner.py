"""The pod runner against a real control plane: Deployments, Jobs, volumes, env, probes, deletion, tokens."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .podrunner import NODE_SELECTOR, expand, host_value, key_files, pod_phase, probe_port

NS = "podrunner-test"
PY = sys.executable  # the runner runs commands via PATH; an absolute path needs no lookup
LABELS = {"app.kubernetes.io/name": "adaspec"}
TEST_LABEL = {"adaspec.dev/test": "podrunner"}  # on cluster-scoped objects, removed at the end
T = TypeVar("T")


# --- the pure parts (no cluster) ----------------------------------------------------------------------


def test_expand_follows_kubelet() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand("$(A)-$(A)", env) == "1-1"
    assert expand("$$(A) $(B) $(EMPTY)x", env) == "$(A) $(B) x"
    assert expand("$A $ $(A", env) == "$A $ $(A"
    assert expand("cost$$ $", env) == "cost$ $"


def test_host_value_rewrites_mounted_paths_and_the_any_address() -> None:
    mounts = [("/var/lib/adaspec", "/h/pvc"), ("/var/lib/adaspec/capture/", "/h/cap"), ("/tmp", "/h/tmp")]
    assert host_value("/var/lib/adaspec", mounts, "127.0.10.1") == "/h/pvc"
    assert host_value("/var/lib/adaspec/x/y", mounts, "ip") == "/h/pvc/x/y"
    assert host_value("/var/lib/adaspec/capture/p", mounts, "ip") == "/h/cap/p"  # the longest mount wins
    assert host_value("--capture-dir=/var/lib/adaspec/capture", mounts, "ip") == "--capture-dir=/h/cap"
    assert host_value("file:///tmp/a", mounts, "ip") == "file:///h/tmp/a"
    assert host_value("--draft=file:///tmp/a", mounts, "ip") == "--draft=file:///h/tmp/a"
    assert host_value("/tmpfile", mounts, "ip") == "/tmpfile"  # a path prefix, not a string prefix
    assert host_value("/etc/hosts", mounts, "ip") == "/etc/hosts"
    assert host_value("0.0.0.0", mounts, "127.0.10.1") == "127.0.10.1"
    assert host_value("--host=0.0.0.0", mounts, "127.0.10.1") == "--host=127.0.10.1"
    assert host_value("10.0.0.0", mounts, "127.0.10.1") == "10.0.0.0"


def test_volume_items_ports_and_phases() -> None:
    data = {"a": b"1", "b": b"2"}
    assert key_files(data, None, "cm", False) == [("a", b"1", None), ("b", b"2", None)]
    assert key_files(data, [{"key": "b", "path": "x/b", "mode": 0o600}], "cm", False) == [
        ("x/b", b"2", 0o600)
    ]
    assert key_files(data, [{"key": "c", "path": "c"}], "cm", True) == []
    with pytest.raises(Exception, match="has no key 'c'"):
        key_files(data, [{"key": "c", "path": "c"}], "cm", False)
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8000}]}
    assert (probe_port("http", container), probe_port(9090, container), probe_port("81", container)) == (
        8000,
        9090,
        81,
    )
    with pytest.raises(Exception, match="names no containerPort"):
        probe_port("metrics", container)
    assert [pod_phase([None, 0]), pod_phase([0, 0]), pod_phase([0, 3])] == ["Running", "Succeeded", "Failed"]


# --- against the cluster ------------------------------------------------------------------------------


def wait_for(check: Callable[[], T | None], what: str, runner: Any, timeout: float = 30.0) -> T:
    """Poll `check` until it returns a truthy value; return it, or fail with the pods' output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{runner.logs(NS)}")


def get(cluster: Any, *args: str) -> Any:
    """Return `kubectl get ... -o json` parsed, or None when it does not exist."""
    proc = cluster.kubectl("get", *args, "-n", NS, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)


def apply(cluster: Any, *objects: dict[str, Any]) -> None:
    """`kubectl apply` the objects, in NS unless their metadata says namespace None (cluster-scoped)."""
    items = []
    for obj in objects:
        meta = {k: v for k, v in {"namespace": NS, **obj["metadata"]}.items() if v is not None}
        items.append({**obj, "metadata": meta})
    cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def container(argv: list[str], name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "adaspec:test", "command": argv, **extra}


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {"nodeSelector": NODE_SELECTOR, "containers": list(containers), **spec},
    }


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def phase_is(cluster: Any, name: str, *phases: str) -> Any:
    obj = get(cluster, "pod", name)
    return obj if obj is not None and obj.get("status", {}).get("phase") in phases else None


def condition(obj: Any, kind: str) -> str | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return str(cond["status"])
    return None


def last_json(text: str) -> Any:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def ns(pod_runner: Any, kube_cluster: Any) -> Iterator[str]:
    """A namespace of this module's own (deleted, with its pods, before the runner stops)."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    kube_cluster.kubectl("wait", "--for=delete", f"namespace/{NS}", "--timeout=90s")  # an earlier run's
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    wait_for(
        lambda: get(kube_cluster, "serviceaccount", "default"), "the default service account", pod_runner
    )
    yield NS
    # pods first: the namespace controller otherwise waits out their grace period before it looks again
    kube_cluster.kubectl("delete", "deployments,jobs,pods", "--all", "-n", NS, "--wait=true", "--timeout=60s")
    # the namespace controller takes ~10 s more with nothing left to stop: not waited for
    kube_cluster.kubectl("delete", "namespace", NS, "--wait=false")
    kube_cluster.kubectl("delete", "pv", "-l", "adaspec.dev/test=podrunner", "--wait=true")


def test_a_deployment_runs_two_ready_pods_each_on_its_own_ip(
    ns: str, pod_runner: Any, kube_cluster: Any
) -> None:
    server = container(
        [PY, "-m", "http.server", "--bind", "0.0.0.0", "8000"],
        ports=[{"name": "http", "containerPort": 8000}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
    )
    labels = {**LABELS, "app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": LABELS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod("x", server)["spec"]},
        },
    }
    apply(kube_cluster, deployment)

    def ready_pods() -> list[Any] | None:
        pods = get(kube_cluster, "pods", "-l", "app=web")["items"]
        return pods if len(pods) == 2 and all(condition(p, "Ready") == "True" for p in pods) else None

    pods = wait_for(ready_pods, "both web pods Ready", pod_runner)
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.0.") and ip != "127.0.0.1" for ip in ips), ips
    for p in pods:
        assert p["spec"]["nodeName"] == pod_runner.node_name
        assert p["status"]["podIPs"] == [{"ip": p["status"]["podIP"]}]
        (status,) = p["status"]["containerStatuses"]
        assert status["started"] and status["ready"] and "running" in status["state"], status
        with urllib.request.urlopen(f"http://{p['status']['podIP']}:8000/", timeout=5) as answer:
            assert answer.status == 200
    wait_for(
        lambda: get(kube_cluster, "deployment", "web").get("status", {}).get("availableReplicas") == 2,
        "the Deployment's two available replicas",
        pod_runner,
    )


def test_readiness_follows_the_probe(ns: str, pod_runner: Any, kube_cluster: Any) -> None:
    gate = container(
        [PY, "-m", "http.server", "--bind", "0.0.0.0", "--directory", "/srv", "8000"],
        readinessProbe={
            "httpGet": {"path": "/ready", "port": 8000},
            "periodSeconds": 10,
            "failureThreshold": 1,
        },
        volumeMounts=[{"name": "srv", "mountPath": "/srv"}],
    )
    apply(kube_cluster, pod("gate", gate, volumes=[{"name": "srv", "emptyDir": {}}]))

    def started() -> Any:
        obj = phase_is(kube_cluster, "gate", "Running")
        return obj if obj and obj["status"]["containerStatuses"][0]["started"] else None

    wait_for(started, "the gate pod started", pod_runner)
    time.sleep(1.5)  # more than a (capped) probe period: /ready is 404 so far
    assert condition(get(kube_cluster, "pod", "gate"), "Ready") == "False"
    ready_file = pod_runner.volume_dir(NS, "gate", "srv") / "ready"
    ready_file.write_text("ok")
    wait_for(lambda: condition(get(kube_cluster, "pod", "gate"), "Ready") == "True", "gate Ready", pod_runner)
    ready_file.unlink()
    wait_for(
        lambda: condition(get(kube_cluster, "pod", "gate"), "Ready") == "False", "gate unready", pod_runner
    )


def test_env_config_volumes_and_expansion(ns: str, pod_runner: Any, kube_cluster: Any) -> None:
    script = (
        "import json, os, sys; "
        "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ), "
        "'file': open(os.environ['GREETING_FILE']).read()}))"
    )
    main = container(
        [
            PY,
            "-c",
            script,
            "$(POD_NAME)/$(POD_NAMESPACE)",
            "$$(POD_NAME)",
            "$(NOPE)",
            "--config=/etc/x/greeting",
        ],
        env=[
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_IP", "status.podIP"),
            {"name": "WHO", "value": "$(POD_NAME) in $(POD_NAMESPACE)"},
            {"name": "GREETING_FILE", "value": "/etc/x/greeting"},
            {"name": "LISTEN", "value": "0.0.0.0"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {
                "name": "ABSENT",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "no", "optional": True}},
            },
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        volumeMounts=[{"name": "x", "mountPath": "/etc/x"}],
    )
    apply(
        kube_cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"greeting": "hello"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cret"},
        },
        pod("env", main, restartPolicy="Never", volumes=[{"name": "x", "configMap": {"name": "settings"}}]),
    )
    obj = wait_for(lambda: phase_is(kube_cluster, "env", "Succeeded", "Failed"), "env pod done", pod_runner)
    assert obj["status"]["phase"] == "Succeeded", pod_runner.log(NS, "env", "main")
    seen = last_json(pod_runner.log(NS, "env", "main"))
    argv, env = seen["argv"], seen["env"]
    assert argv[:3] == [f"env/{NS}", "$(POD_NAME)", "$(NOPE)"]
    config = argv[3].removeprefix("--config=")
    assert config != "/etc/x/greeting" and Path(config).read_text() == "hello" == seen["file"]
    assert env["WHO"] == f"env in {NS}" and env["POD_IP"] == obj["status"]["podIP"] == env["LISTEN"]
    assert env["TOKEN"] == "s3cret" and env["CFG_greeting"] == "hello" and "ABSENT" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == str(
        pod_runner.port
    )
    assert env["PYTHONUNBUFFERED"] == "1" and env["HOME"].startswith(str(pod_runner.workdir))
    assert Path(env["KUBECONFIG"]).is_file()  # the service account's token, for the in-cluster fallback
    own = {"POD_NAME", "POD_NAMESPACE", "POD_IP", "WHO", "GREETING_FILE", "LISTEN", "TOKEN", "CFG_greeting"}
    base = {
        "PATH",
        "HOME",
        "HOSTNAME",
        "PYTHONUNBUFFERED",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    }
    assert set(env) - own - base - {"KUBECONFIG", "LC_CTYPE"} == set()  # nothing else of the runner's
    assert "PYTEST_CURRENT_TEST" in os.environ


def test_a_claim_bound_to_a_host_path_is_shared(
    ns: str, pod_runner: Any, kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = tmp_path_factory.mktemp("shared-pv")
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "podrunner-shared", "labels": TEST_LABEL, "namespace": None},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "podrunner",
            "hostPath": {"path": str(shared)},
            "claimRef": {"namespace": NS, "name": "shared"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "shared"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "podrunner",
            "volumeName": "podrunner-shared",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    write = "import sys; open(sys.argv[1], 'w').write('written by the writer')"
    read = (
        "import os, sys, time\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.1)\n"
        "time.sleep(0.2); print('read:', open(sys.argv[1]).read())"
    )
    mounts: dict[str, Any] = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]
    apply(
        kube_cluster,
        pv,
        claim,
        pod(
            "reader",
            container([PY, "-c", read, "/data/note"], **mounts),
            restartPolicy="Never",
            volumes=volumes,
        ),
        pod(
            "writer",
            container([PY, "-c", write, "/data/note"], **mounts),
            restartPolicy="Never",
            volumes=volumes,
        ),
    )
    for name in ("writer", "reader"):
        obj = wait_for(
            partial(phase_is, kube_cluster, name, "Succeeded", "Failed"), f"{name} done", pod_runner
        )
        assert obj["status"]["phase"] == "Succeeded", pod_runner.logs(NS)
    assert "read: written by the writer" in pod_runner.log(NS, "reader", "main")
    assert (shared / "note").read_text() == "written by the writer"


def test_jobs_complete_or_fail_with_their_pods(ns: str, pod_runner: Any, kube_cluster: Any) -> None:
    def job(name: str, script: str) -> dict[str, Any]:
        main = container([PY, "-c", script], terminationMessagePolicy="FallbackToLogsOnError")
        template = pod(name, main, restartPolicy="Never")
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": LABELS},
            "spec": {
                "backoffLimit": 0,
                "template": {"metadata": {"labels": LABELS}, "spec": template["spec"]},
            },
        }

    apply(
        kube_cluster,
        job("ok", "print('done')"),
        job("broken", "import sys; print('about to fail'); print('last words', flush=True); sys.exit(3)"),
    )

    def job_condition(name: str, kind: str) -> bool:
        return condition(get(kube_cluster, "job", name), kind) == "True"

    wait_for(lambda: job_condition("ok", "Complete"), "Job ok Complete", pod_runner)
    wait_for(lambda: job_condition("broken", "Failed"), "Job broken Failed", pod_runner)
    (failed,) = get(kube_cluster, "pods", "-l", "batch.kubernetes.io/job-name=broken")["items"]
    assert failed["status"]["phase"] == "Failed"
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert "last words" in terminated["message"], terminated
    (done,) = get(kube_cluster, "pods", "-l", "batch.kubernetes.io/job-name=ok")["items"]
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "message" not in done["status"]["containerStatuses"][0]["state"]["terminated"]


def test_deleting_a_pod_terminates_its_process(
    ns: str, pod_runner: Any, kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    marks = tmp_path_factory.mktemp("marks")
    script = (
        "import os, signal, sys, time\n"
        "def term(*_):\n"
        "    open(os.path.join(sys.argv[1], 'term'), 'w').write('TERM'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "open(os.path.join(sys.argv[1], 'pid'), 'w').write(str(os.getpid()))\n"
        "while True: time.sleep(0.1)\n"
    )
    main = container([PY, "-c", script, "/marks"], volumeMounts=[{"name": "marks", "mountPath": "/marks"}])
    volumes = [{"name": "marks", "hostPath": {"path": str(marks), "type": "Directory"}}]
    apply(kube_cluster, pod("sleeper", main, volumes=volumes, terminationGracePeriodSeconds=20))
    wait_for(
        lambda: condition(get(kube_cluster, "pod", "sleeper"), "Ready") == "True", "sleeper Ready", pod_runner
    )
    wait_for(lambda: (marks / "pid").is_file() and (marks / "pid").read_text(), "the pid file", pod_runner)
    pid = int((marks / "pid").read_text())
    began = time.monotonic()
    kube_cluster.kubectl("delete", "pod", "sleeper", "-n", NS, "--wait=false")
    wait_for(lambda: get(kube_cluster, "pod", "sleeper") is None, "the pod object gone", pod_runner)
    assert time.monotonic() - began < 15  # it exited on SIGTERM: no waiting out the 20 s grace period
    assert (marks / "term").read_text() == "TERM"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_service_account_token_reads_its_own_pod(ns: str, pod_runner: Any, kube_cluster: Any) -> None:
    script = """
import base64, json, os, sys
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
try:
    config.load_incluster_config()
    how = "in-cluster"
except config.ConfigException:
    config.load_kube_config()
    how = "kubeconfig"
api = client.CoreV1Api()
me = api.read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"])
try:
    api.list_namespaced_secret(os.environ["POD_NAMESPACE"])
    secrets = "allowed"
except ApiException as exc:
    secrets = exc.status
payload = open(sys.argv[1]).read().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(json.dumps({"how": how, "uid": me.metadata.uid, "secrets": secrets, "aud": claims["aud"],
                  "bound": claims["kubernetes.io"]["pod"]["name"]}))
"""
    main = container(
        [PY, "-c", script, "/var/run/audience/token"],
        env=[field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")],
        volumeMounts=[{"name": "audience", "mountPath": "/var/run/audience"}],
    )
    token = {"serviceAccountToken": {"audience": "adaspec-test", "expirationSeconds": 600, "path": "token"}}
    rbac = "rbac.authorization.k8s.io/v1"
    apply(
        kube_cluster,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}],
        },
    )
    volumes = [{"name": "audience", "projected": {"sources": [token]}}]
    apply(
        kube_cluster, pod("whoami", main, serviceAccountName="reader", restartPolicy="Never", volumes=volumes)
    )
    obj = wait_for(
        lambda: phase_is(kube_cluster, "whoami", "Succeeded", "Failed"), "whoami done", pod_runner, 60
    )
    assert obj["status"]["phase"] == "Succeeded", pod_runner.log(NS, "whoami", "main")
    assert any(v["name"].startswith("kube-api-access-") for v in obj["spec"]["volumes"])  # added by admission
    seen = last_json(pod_runner.log(NS, "whoami", "main"))
    assert seen == {
        "how": "kubeconfig",
        "uid": obj["metadata"]["uid"],
        "secrets": 403,
        "aud": ["adaspec-test"],
        "bound": "whoami",
    }


def test_on_failure_restarts_until_it_succeeds(ns: str, pod_runner: Any, kube_cluster: Any) -> None:
    script = (
        "import os, sys\n"
        "n = int(open(sys.argv[1]).read()) + 1 if os.path.exists(sys.argv[1]) else 1\n"
        "open(sys.argv[1], 'w').write(str(n)); print('run', n); sys.exit(1 if n == 1 else 0)\n"
    )
    main = container(
        [PY, "-c", script, "/state/runs"], volumeMounts=[{"name": "state", "mountPath": "/state"}]
    )
    apply(
        kube_cluster,
        pod("flaky", main, restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}]),
    )
    obj = wait_for(lambda: phase_is(kube_cluster, "flaky", "Succeeded", "Failed"), "flaky done", pod_runner)
    assert obj["status"]["phase"] == "Succeeded", pod_runner.log(NS, "flaky", "main")
    (status,) = obj["status"]["containerStatuses"]
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] == 1, status
    assert pod_runner.log(NS, "flaky", "main").split() == ["run", "1", "run", "2"]


def test_a_pod_it_cannot_run_fails_with_a_reason_and_the_runner_goes_on(
    ns: str, pod_runner: Any, kube_cluster: Any
) -> None:
    nfs = [{"name": "v", "nfs": {"server": "nfs.invalid", "path": "/x"}}]
    apply(
        kube_cluster,
        pod("no-command", {"name": "main", "image": "busybox"}, restartPolicy="Never"),
        pod("nfs", container([PY, "-V"]), restartPolicy="Never", volumes=nfs),
        pod(
            "init",
            container([PY, "-V"]),
            restartPolicy="Never",
            initContainers=[container([PY, "-V"], "init")],
        ),
        pod("after", container([PY, "-c", "print('still here')"]), restartPolicy="Never"),
    )
    for name, reason in (("no-command", "has no command"), ("nfs", "'nfs'"), ("init", "init containers")):
        obj = wait_for(partial(phase_is, kube_cluster, name, "Failed"), f"{name} Failed", pod_runner)
        assert reason in obj["status"]["message"], obj["status"]
        assert obj["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "StartError"
    wait_for(lambda: phase_is(kube_cluster, "after", "Succeeded"), "after Succeeded", pod_runner)
    assert pod_runner.log(NS, "after", "main").strip() == "still here"
