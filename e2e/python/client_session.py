"""The official Python `kubernetes` client against a running knit server.

Usage: python3 client_session.py KUBECONFIG

For pods, services, endpoints, endpointslices and ingresses: create, get,
list (with a label selector), patch (strategic merge and JSON patch), watch
(resumed from a resourceVersion, seeing exactly the changes made after it),
and delete. Any failed check raises; the exit code tells the Rust test
(e2e/tests/python_client.rs) whether the session passed.
"""

import sys
import threading

from kubernetes import client, config, watch

NS = "py-session"


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def pod(name):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "py", "name": name}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="main",
                    image="alpine",
                    ports=[client.V1ContainerPort(name="http", container_port=8080)],
                )
            ],
        ),
    )


def service(name):
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}),
        spec=client.V1ServiceSpec(
            selector={"app": "py"},
            ports=[client.V1ServicePort(port=80, target_port="http")],
        ),
    )


def endpoints(name):
    return client.V1Endpoints(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}),
        subsets=[
            client.V1EndpointSubset(
                addresses=[client.V1EndpointAddress(ip="10.0.1.2")],
                ports=[client.CoreV1EndpointPort(port=8080)],
            )
        ],
    )


def endpoint_slice(name):
    return client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={"app": "py", "kubernetes.io/service-name": "svc-a"},
        ),
        address_type="IPv4",
        endpoints=[
            client.V1Endpoint(
                addresses=["10.0.1.2"],
                conditions=client.V1EndpointConditions(ready=True),
            )
        ],
        ports=[client.DiscoveryV1EndpointPort(name="http", port=8080, protocol="TCP")],
    )


def ingress(name):
    backend = client.V1IngressBackend(
        service=client.V1IngressServiceBackend(
            name="svc-a", port=client.V1ServiceBackendPort(number=80)
        )
    )
    return client.V1Ingress(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}),
        spec=client.V1IngressSpec(
            rules=[
                client.V1IngressRule(
                    host="testhost.com",
                    http=client.V1HTTPIngressRuleValue(
                        paths=[
                            client.V1HTTPIngressPath(
                                path="/", path_type="Prefix", backend=backend
                            )
                        ]
                    ),
                )
            ]
        ),
    )


def session(kind, make, create, read, list_, patch, delete):
    """One resource's whole session; `list_` lists in NS."""
    first = create(NS, make(f"{kind}-a"))
    check(first.metadata.uid, f"{kind}: create returns a uid")
    start_rv = first.metadata.resource_version
    create(NS, make(f"{kind}-b"))

    got = read(f"{kind}-a", NS)
    check(got.metadata.name == f"{kind}-a", f"{kind}: get by name")
    listed = list_(NS, label_selector="app=py")
    names = sorted(item.metadata.name for item in listed.items)
    check(names == [f"{kind}-a", f"{kind}-b"], f"{kind}: list gave {names}")
    check(listed.metadata.resource_version, f"{kind}: list has a resourceVersion")

    # Strategic merge patch (the client's default for a dict body).
    patched = patch(f"{kind}-a", NS, {"metadata": {"labels": {"patched": "smp"}}})
    check(patched.metadata.labels.get("patched") == "smp", f"{kind}: strategic patch")
    check(patched.metadata.labels.get("app") == "py", f"{kind}: strategic patch keeps labels")
    # JSON patch (a list body).
    patched = patch(
        f"{kind}-a",
        NS,
        [{"op": "replace", "path": "/metadata/labels/patched", "value": "json"}],
    )
    check(patched.metadata.labels.get("patched") == "json", f"{kind}: JSON patch")

    delete(f"{kind}-b", NS)

    # A watch resumed from the first create sees, in order, what came after it.
    events = []
    stream = watch.Watch()
    # Only this session's objects: the controllers write Endpoints of
    # their own for the Services of the svc session.
    for event in stream.stream(
        list_, NS, label_selector="app=py", resource_version=start_rv, timeout_seconds=5
    ):
        events.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            stream.stop()
    expected = [
        ("ADDED", f"{kind}-b"),
        ("MODIFIED", f"{kind}-a"),
        ("MODIFIED", f"{kind}-a"),
        ("DELETED", f"{kind}-b"),
    ]
    check(events == expected, f"{kind}: watch from {start_rv} gave {events}")

    # A live watch sees a change made while it runs.
    seen = []
    live = watch.Watch()

    def later():
        patch(f"{kind}-a", NS, {"metadata": {"labels": {"live": "yes"}}})

    rv = list_(NS, label_selector="app=py").metadata.resource_version
    timer = threading.Timer(0.3, later)
    timer.start()
    for event in live.stream(
        list_, NS, label_selector="app=py", resource_version=rv, timeout_seconds=5
    ):
        seen.append(event["type"])
        if event["object"].metadata.labels.get("live") == "yes":
            live.stop()
    timer.join()
    check(seen == ["MODIFIED"], f"{kind}: live watch gave {seen}")

    delete(f"{kind}-a", NS)
    remaining = list_(NS, label_selector="app=py").items
    check(remaining == [], f"{kind}: left after delete: {remaining}")
    print(f"ok: {kind}")


def main():
    config.load_kube_config(config_file=sys.argv[1])
    core = client.CoreV1Api()
    discovery = client.DiscoveryV1Api()
    networking = client.NetworkingV1Api()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

    session(
        "pod",
        pod,
        core.create_namespaced_pod,
        core.read_namespaced_pod,
        core.list_namespaced_pod,
        core.patch_namespaced_pod,
        core.delete_namespaced_pod,
    )
    session(
        "svc",
        service,
        core.create_namespaced_service,
        core.read_namespaced_service,
        core.list_namespaced_service,
        core.patch_namespaced_service,
        core.delete_namespaced_service,
    )
    session(
        "ep",
        endpoints,
        core.create_namespaced_endpoints,
        core.read_namespaced_endpoints,
        core.list_namespaced_endpoints,
        core.patch_namespaced_endpoints,
        core.delete_namespaced_endpoints,
    )
    session(
        "slice",
        endpoint_slice,
        discovery.create_namespaced_endpoint_slice,
        discovery.read_namespaced_endpoint_slice,
        discovery.list_namespaced_endpoint_slice,
        discovery.patch_namespaced_endpoint_slice,
        discovery.delete_namespaced_endpoint_slice,
    )
    session(
        "ing",
        ingress,
        networking.create_namespaced_ingress,
        networking.read_namespaced_ingress,
        networking.list_namespaced_ingress,
        networking.patch_namespaced_ingress,
        networking.delete_namespaced_ingress,
    )

    # Bad input comes back as an ApiException with the Status's reason.
    try:
        core.create_namespaced_pod(NS, pod("Bad_Name"))
        raise AssertionError("an invalid name was accepted")
    except client.ApiException as err:
        check(err.status == 422, f"invalid name gave {err.status}")
        check("metadata.name" in err.body, f"invalid name body: {err.body}")
    print("ok: all")


if __name__ == "__main__":
    main()
