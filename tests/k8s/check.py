"""What the Kubernetes schemas cannot check, on the rendered overlays.

    python check.py dev.yaml production.yaml      # each the output of `kubectl kustomize`
    python check.py --self-test ...               # shows that each rule can fail
    python check.py --binaries target/debug ...   # and each service accepts its settings

Every Deployment has a startup, liveness and readiness probe through its own binary, a
PodDisruptionBudget and a NetworkPolicy selecting it (behind a default deny of both
directions), the security context of the guide's Kubernetes page (non-root, read-only root filesystem, every
capability dropped, no privilege escalation, RuntimeDefault seccomp), requests and limits, a
ServiceAccount without a token, a grace period covering its drain, and images that
deployments/docker/build-images.sh builds. Production runs two or more replicas of each over
PostgreSQL from a Secret, with an HPA and a cert-manager Certificate of the right shape.
With --binaries, each service's own binary loads the settings its Deployment gives it (every
CTR_* variable a service does not know stops it, so a typo would crash the pods).
"""

import base64
import copy
import pathlib
import re
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def built_images():
    """The images build-images.sh tags, with its default tag: {"ctr/coupons:dev", ...}."""
    script = (REPO / "deployments/docker/build-images.sh").read_text()
    tag = re.search(r'tag="\$\{CTR_IMAGE_TAG:-([^}]+)\}"', script).group(1)
    builds = re.search(r"builds=\((.*?)\)", script, re.S).group(1).split()
    return {f"ctr/{build.split(':')[2]}:{tag}" for build in builds}


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def selects(selector, labels):
    """Whether a label selector (matchLabels and matchExpressions In) selects `labels`."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] != "In" or labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def pod_specs(objects):
    """(kind/name, pod template spec, pod labels) of every workload."""
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("Deployment", "Job"):
            template = obj["spec"]["template"]
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        yield f"{kind}/{name}", template["spec"], template["metadata"].get("labels", {})


# What a Secret would give a variable that comes from one.
PLACEHOLDERS = {"CTR_STORE_URL": "postgres://ctr:placeholder@database:5432/ctr"}


def environment(container, config_maps, secrets):
    """The CTR_* variables `container` starts with."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps.get(source["configMapRef"]["name"], {}))
        if "secretRef" in source:
            env.update(secrets.get(source["secretRef"]["name"], {}))
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", PLACEHOLDERS.get(variable["name"], "placeholder"))
    return env


def settings_refused(binaries, name, env):
    """What the service's binary says of `env` when it refuses it as configuration (exit 2)."""
    binary = pathlib.Path(binaries) / name
    # `admin PATH` loads the configuration first: exit 2 is a refused setting; with usable
    # settings it then fails to reach a service that is not running (exit 1).
    run = subprocess.run([str(binary), "admin", "/admin/v1/livez"], env=env, capture_output=True,
                         text=True, timeout=30)
    return run.stderr.strip() if run.returncode == 2 else None


def check(overlay, objects, images, binaries=None):
    """The failures of one rendered overlay, as sentences."""
    failures = []
    fail = failures.append
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(f"{overlay}: no Deployment")
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
               for s in by_kind.get("Secret", [])}
    accounts = {a["metadata"]["name"]: a for a in by_kind.get("ServiceAccount", [])}
    policies = by_kind.get("NetworkPolicy", [])

    for where, spec, labels in pod_specs(objects):
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            fail(f"{overlay} {where}: runAsNonRoot is not true")
        if (pod_security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(f"{overlay} {where}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{overlay} {where}: the pod mounts a service account token")
        account = accounts.get(spec.get("serviceAccountName"))
        if account is None or account.get("automountServiceAccountToken") is not False:
            fail(f"{overlay} {where}: no ServiceAccount of its own without token automount")
        for container in spec["containers"]:
            name = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                fail(f"{overlay} {name}: the root filesystem is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                fail(f"{overlay} {name}: privilege escalation is allowed")
            if (security.get("capabilities") or {}).get("drop") != ["ALL"]:
                fail(f"{overlay} {name}: not every capability is dropped")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                if set((resources.get(bound) or {})) != {"cpu", "memory"}:
                    fail(f"{overlay} {name}: no cpu and memory {bound}")
            if container["image"] not in images:
                fail(f"{overlay} {name}: image {container['image']} is not one build-images.sh tags ({sorted(images)})")
        if not any(selects(p["spec"]["podSelector"], labels) and not p["spec"].get("ingress")
                   and not p["spec"].get("egress")
                   and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for p in policies):
            fail(f"{overlay} {where}: no default-deny NetworkPolicy (ingress and egress) selects it")

    for deployment in deployments:
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        spec = template["spec"]
        container = spec["containers"][0]
        for probe, path in (("startupProbe", "/admin/v1/livez"), ("livenessProbe", "/admin/v1/livez"),
                            ("readinessProbe", "/admin/v1/readyz")):
            command = ((container.get(probe) or {}).get("exec") or {}).get("command")
            if command != ["/service", "admin", path]:
                fail(f"{overlay} Deployment/{name}: its {probe} is not `/service admin {path}` ({command})")
        if not any(selects(p["spec"]["selector"], labels) for p in by_kind.get("PodDisruptionBudget", [])):
            fail(f"{overlay} Deployment/{name}: no PodDisruptionBudget selects its pods")
        if not any(selects(p["spec"]["podSelector"], labels) and p["spec"].get("ingress")
                   for p in policies):
            fail(f"{overlay} Deployment/{name}: no NetworkPolicy lets anything reach it")
        settings = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref and ref["name"] not in config_maps:
                fail(f"{overlay} Deployment/{name}: ConfigMap {ref['name']} does not exist")
            elif ref:
                settings.update(config_maps[ref["name"]])
        drain = seconds(settings.get("CTR_SHUTDOWN_DELAY", "0s")) + seconds(settings.get("CTR_SHUTDOWN_GRACE", "10s"))
        if name == "order-processing":
            drain = seconds(settings.get("CTR_SHUTDOWN_DELAY", "0s")) + max(
                seconds(settings.get("CTR_SHUTDOWN_GRACE", "10s")), seconds(settings.get("CTR_SAGA_GRACE", "15s")))
        if spec.get("terminationGracePeriodSeconds", 30) <= drain:
            fail(f"{overlay} Deployment/{name}: terminationGracePeriodSeconds does not cover its drain ({drain} s)")
        if binaries is not None:
            refused = settings_refused(binaries, container["name"], environment(container, config_maps, secrets))
            if refused:
                fail(f"{overlay} Deployment/{name}: its service refuses the settings it is given: {refused}")
        if seconds(settings.get("CTR_SHUTDOWN_DELAY", "0s")) < 5:
            fail(f"{overlay} Deployment/{name}: CTR_SHUTDOWN_DELAY is under 5 s: readiness would not drop before the listener closes")

    if overlay == "production":
        check_production(objects, by_kind, fail)
    return failures


def check_production(objects, by_kind, fail):
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", [])}
    issuers = {i["metadata"]["name"]: i for i in by_kind.get("Issuer", [])}
    certificates = {c["spec"]["secretName"]: c for c in by_kind.get("Certificate", [])}
    namespace = None
    for deployment in by_kind.get("Deployment", []):
        name = deployment["metadata"]["name"]
        namespace = deployment["metadata"].get("namespace")
        if deployment["spec"].get("replicas", 1) < 2:
            fail(f"production Deployment/{name}: fewer than two replicas")
        hpa = hpas.get(name)
        if hpa is None or hpa["spec"].get("minReplicas", 1) < 2 or not any(
                m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
            fail(f"production Deployment/{name}: no HorizontalPodAutoscaler on CPU from two replicas")
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        store = next((e for e in container.get("env", []) if e["name"] == "CTR_STORE_URL"), None)
        if store is None or "secretKeyRef" not in store.get("valueFrom", {}):
            fail(f"production Deployment/{name}: CTR_STORE_URL does not come from a Secret")
        pki = next((v for v in spec.get("volumes", []) if v["name"] == "pki"), {})
        secret = (pki.get("secret") or {}).get("secretName")
        certificate = certificates.get(secret)
        if certificate is None:
            fail(f"production Deployment/{name}: its TLS Secret {secret} is no Certificate's")
            continue
        cert = certificate["spec"]
        key = cert.get("privateKey", {})
        if (key.get("algorithm"), key.get("size"), key.get("encoding")) != ("ECDSA", 384, "PKCS8"):
            fail(f"production Certificate/{certificate['metadata']['name']}: not an ECDSA P-384 key in PKCS#8 ({key})")
        if not {"server auth", "client auth"} <= set(cert.get("usages", [])):
            fail(f"production Certificate/{certificate['metadata']['name']}: not both server and client usages")
        wanted = {name, f"{name}.{namespace}.svc", "localhost"}
        if not wanted <= set(cert.get("dnsNames", [])) or "127.0.0.1" not in cert.get("ipAddresses", []):
            fail(f"production Certificate/{certificate['metadata']['name']}: its names lack one of {sorted(wanted)} or 127.0.0.1")
        issuer = issuers.get(cert.get("issuerRef", {}).get("name"))
        if issuer is None or "ca" not in issuer["spec"]:
            fail(f"production Certificate/{certificate['metadata']['name']}: not issued by a CA Issuer of the overlay")


def load(path):
    return [doc for doc in yaml.safe_load_all(pathlib.Path(path).read_text()) if doc]


def self_test(paths, binaries):
    """Breaks a rendered overlay in each way a rule names, and expects the rule to say so."""
    images = built_images()
    production = next(p for p in paths if pathlib.Path(p).stem == "production")
    objects = load(production)
    assert not check("production", objects, images, binaries), check("production", objects, images, binaries)

    def broken(mutate):
        copied = copy.deepcopy(objects)
        mutate(copied)
        return check("production", copied, images, binaries)

    def deployment(objs):
        return next(o for o in objs if o["kind"] == "Deployment")

    def container(objs):
        return deployment(objs)["spec"]["template"]["spec"]["containers"][0]

    cases = {
        "readinessProbe": lambda o: container(o).pop("readinessProbe"),
        "PodDisruptionBudget": lambda o: o.remove(next(x for x in o if x["kind"] == "PodDisruptionBudget"
                                                       and x["metadata"]["name"] == deployment(o)["metadata"]["name"])),
        "default-deny": lambda o: o.remove(next(x for x in o if x["metadata"]["name"] == "ctr-default-deny")),
        "root filesystem": lambda o: container(o)["securityContext"].update(readOnlyRootFilesystem=False),
        "capability": lambda o: container(o)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "build-images.sh": lambda o: container(o).update(image="ctr/coupons:latest"),
        "two replicas": lambda o: deployment(o)["spec"].update(replicas=1),
        "P-384": lambda o: next(x for x in o if x["kind"] == "Certificate"
                                and x["spec"]["secretName"] != "ctr-root-ca")["spec"]["privateKey"].update(size=256),
        "drain": lambda o: deployment(o)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=5),
    }
    if binaries is not None:
        cases["unknown setting CTR_TLS_CERTIFICATE"] = lambda o: next(
            x for x in o if x["kind"] == "ConfigMap")["data"].update(CTR_TLS_CERTIFICATE="/pki/tls.crt")
    for rule, mutate in cases.items():
        failures = broken(mutate)
        assert any(rule in f for f in failures), f"breaking `{rule}` went unnoticed: {failures}"
    print(f"check.py self-test: each of {len(cases)} broken overlays is refused by its rule")


def main(argv):
    binaries = None
    if "--binaries" in argv:
        at = argv.index("--binaries")
        binaries = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    paths = [a for a in argv if not a.startswith("--")]
    if not paths:
        sys.exit(__doc__)
    if "--self-test" in argv:
        self_test(paths, binaries)
    images = built_images()
    failures = []
    for path in paths:
        overlay = pathlib.Path(path).stem
        objects = load(path)
        found = check(overlay, objects, images, binaries)
        failures += found
        deployments = sum(o["kind"] == "Deployment" for o in objects)
        print(f"overlay {overlay}: {deployments} Deployments checked, {len(found)} failures")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
