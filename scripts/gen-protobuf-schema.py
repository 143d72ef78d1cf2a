#!/usr/bin/env python3
"""Generate api/src/protobuf/schema.rs: the protobuf message table knit's
request decoder walks.

Kubernetes' protobuf encoding is proto2 as written by gogo-protobuf; the
field numbers and wire types of every message are carried by the `k8s-pb`
crate's `#[prost(...)]` attributes, and the JSON names of the same fields by
`k8s-openapi`'s `Deserialize` impls (`"podIP" => Field::Key_pod_ip`). Both
crates name fields with the same Rust idents, so joining them gives, for
every message, `tag -> (JSON name, kind)`.

Only the messages reachable from the kinds in api/src/registry.rs (plus the
subresource bodies Binding and Scale) are emitted. The special types whose
JSON form is not an object (Time, MicroTime, Duration, Quantity,
IntOrString, RawExtension, FieldsV1) become dedicated kinds the decoder
knows how to render.

Which zero values to keep: gogo writes every Go non-pointer field, so a
`false`, `0` or `""` on the wire may mean "unset". The decoder mirrors Go's
encoding/json instead: a field the JSON form always carries (required in
k8s-openapi, i.e. no `omitempty`) keeps its zero value; an optional scalar
drops it, unless the Go field is a pointer (listed in GO_POINTERS below,
taken from k8s.io/api's types.go), where a zero on the wire was set on
purpose (`replicas: 0`, `enableServiceLinks: false`).

Usage (from the workspace root, after `cargo fetch` so the crates are in
the cargo registry):

    python3 scripts/gen-protobuf-schema.py > api/src/protobuf/schema.rs

(the generated file is exempt from rustfmt; warnings go to stderr).
"""

import glob
import os
import re
import sys

K8S_PB = "k8s-pb-0.9.0"
K8S_OPENAPI = "k8s-openapi-0.29.0"
OPENAPI_VERSION = "v1_35"

# Messages with their own JSON form, by k8s-pb module path and name.
SPECIAL = {
    "apimachinery/pkg/apis/meta/v1.Time": "Time",
    "apimachinery/pkg/apis/meta/v1.MicroTime": "MicroTime",
    "apimachinery/pkg/apis/meta/v1.Duration": "Duration",
    "apimachinery/pkg/apis/meta/v1.FieldsV1": "FieldsV1",
    "apimachinery/pkg/api/resource.Quantity": "Quantity",
    "apimachinery/pkg/util/intstr.IntOrString": "IntOrString",
    "apimachinery/pkg/runtime.RawExtension": "RawExtension",
}

# Bodies of subresources, decoded like the kinds themselves.
EXTRA_ROOTS = [
    "api/core/v1.Binding",
    "api/autoscaling/v1.Scale",
]

# Go pointer scalars of the reachable messages (`*int32`, `*bool`, `*string`
# ...): gogo writes them only when set, so their zero value is meaningful.
# `Message.field` by Rust ident, as in k8s-pb.
GO_POINTERS = {
    # apps/v1
    "DeploymentSpec.replicas",
    "DeploymentSpec.revision_history_limit",
    "DeploymentSpec.progress_deadline_seconds",
    "ReplicaSetSpec.replicas",
    "DeploymentStatus.collision_count",
    "DeploymentStatus.terminating_replicas",
    "ReplicaSetStatus.terminating_replicas",
    # core/v1 PodSpec and friends
    "PodSpec.termination_grace_period_seconds",
    "PodSpec.active_deadline_seconds",
    "PodSpec.automount_service_account_token",
    "PodSpec.share_process_namespace",
    "PodSpec.priority",
    "PodSpec.enable_service_links",
    "PodSpec.preemption_policy",
    "PodSpec.set_hostname_as_fqdn",
    "PodSpec.host_users",
    "PodSpec.runtime_class_name",
    "PodSpec.hostname_override",
    "Probe.termination_grace_period_seconds",
    "SecurityContext.privileged",
    "SecurityContext.run_as_user",
    "SecurityContext.run_as_group",
    "SecurityContext.run_as_non_root",
    "SecurityContext.read_only_root_filesystem",
    "SecurityContext.allow_privilege_escalation",
    "SecurityContext.proc_mount",
    "PodSecurityContext.run_as_user",
    "PodSecurityContext.run_as_group",
    "PodSecurityContext.run_as_non_root",
    "PodSecurityContext.fs_group",
    "PodSecurityContext.fs_group_change_policy",
    "PodSecurityContext.selinux_change_policy",
    "WindowsSecurityContextOptions.gmsa_credential_spec_name",
    "WindowsSecurityContextOptions.gmsa_credential_spec",
    "WindowsSecurityContextOptions.run_as_user_name",
    "WindowsSecurityContextOptions.host_process",
    "SeccompProfile.localhost_profile",
    "AppArmorProfile.localhost_profile",
    "Container.restart_policy",
    "EphemeralContainerCommon.restart_policy",
    "ContainerStatus.started",
    "ContainerStatus.allocated_resources_status",
    "ContainerStatus.stop_signal",
    "Lifecycle.stop_signal",
    "EnvVar.value_from",
    "ConfigMapKeySelector.optional",
    "SecretKeySelector.optional",
    "ConfigMapEnvSource.optional",
    "SecretEnvSource.optional",
    "ConfigMapVolumeSource.default_mode",
    "ConfigMapVolumeSource.optional",
    "SecretVolumeSource.default_mode",
    "SecretVolumeSource.optional",
    "ConfigMapProjection.optional",
    "SecretProjection.optional",
    "ProjectedVolumeSource.default_mode",
    "DownwardAPIVolumeSource.default_mode",
    "DownwardAPIVolumeFile.mode",
    "KeyToPath.mode",
    "ServiceAccountTokenProjection.expiration_seconds",
    "EmptyDirVolumeSource.size_limit",
    "VolumeMount.recursive_read_only",
    "HostPathVolumeSource.type",
    "CSIVolumeSource.read_only",
    "CSIVolumeSource.fs_type",
    "ISCSIVolumeSource.initiator_name",
    "NFSVolumeSource.read_only",
    "HTTPGetAction.port",
    "GRPCAction.service",
    "PodDNSConfigOption.value",
    "PodOS.name",
    "TopologySpreadConstraint.min_domains",
    "TopologySpreadConstraint.node_affinity_policy",
    "TopologySpreadConstraint.node_taints_policy",
    "Toleration.toleration_seconds",
    "PodResourceClaim.resource_claim_name",
    "PodResourceClaim.resource_claim_template_name",
    # core/v1 Service
    "ServiceSpec.allocate_load_balancer_node_ports",
    "ServiceSpec.load_balancer_class",
    "ServiceSpec.internal_traffic_policy",
    "ServiceSpec.ip_family_policy",
    "ServiceSpec.traffic_distribution",
    "ServicePort.app_protocol",
    "ClientIPConfig.timeout_seconds",
    "LoadBalancerIngress.ip_mode",
    "PortStatus.error",
    "EndpointPort.app_protocol",
    # core/v1 Event, Secret, ConfigMap
    "Secret.immutable",
    "ConfigMap.immutable",
    "EventSeries.count",
    # meta/v1
    "ObjectMeta.deletion_grace_period_seconds",
    "OwnerReference.controller",
    "OwnerReference.block_owner_deletion",
    # discovery/v1
    "Endpoint.hostname",
    "Endpoint.node_name",
    "Endpoint.zone",
    "EndpointConditions.ready",
    "EndpointConditions.serving",
    "EndpointConditions.terminating",
    "EndpointPort.name",
    "EndpointPort.protocol",
    "EndpointPort.port",
    # networking/v1
    "IngressSpec.ingress_class_name",
    "IngressBackend.resource",
    "HTTPIngressPath.path_type",
    "IngressClassParametersReference.api_group",
    "IngressClassParametersReference.scope",
    "IngressClassParametersReference.namespace",
    "IngressPortStatus.error",
    # coordination/v1
    "LeaseSpec.holder_identity",
    "LeaseSpec.lease_duration_seconds",
    "LeaseSpec.lease_transitions",
    "LeaseSpec.strategy",
    "LeaseSpec.preferred_holder",
    # core/v1 volume sources and node status, rarely sent but kept exact
    "AzureDiskVolumeSource.read_only",
    "FCVolumeSource.lun",
    "ClusterTrustBundleProjection.optional",
    "FileKeySelector.optional",
    "PodCertificateProjection.max_expiration_seconds",
    "NodeFeatures.supplemental_groups_policy",
    "NodeRuntimeHandlerFeatures.recursive_read_only_mounts",
    "NodeRuntimeHandlerFeatures.user_namespaces",
    "NodeSwapStatus.capacity",
}

SCALARS = {
    "string": "String",
    "bool": "Bool",
    "int32": "Int32",
    "int64": "Int64",
    "double": "Double",
    'bytes = "vec"': "Bytes",
}


def crate_dir(name):
    """The crate's source directory in the local cargo registry."""
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(os.path.join(home, "registry", "src", "*", name)))
    if not found:
        sys.exit(f"{name} is not in {home}/registry/src; run `cargo fetch` first")
    return found[-1]


STRUCT_RE = re.compile(r"^pub struct (\w+) \{$", re.M)
FIELD_RE = re.compile(
    r"#\[prost\(([^]]*?)tag = \"(\d+)\"\)\]\s*pub (?:r#)?(\w+):\s*([^;]*?),\n\s*(?:///|#\[|\})",
    re.S,
)


def parse_pb(root):
    """`{module.Name: [(tag, ident, attrs, rust_type)]}` for every message."""
    messages = {}
    for path in glob.glob(os.path.join(root, "src", "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), os.path.join(root, "src"))
        text = open(path).read()
        for m in STRUCT_RE.finditer(text):
            end = text.index("\n}\n", m.end())
            body = text[m.end() : end + 2]
            fields = []
            for f in FIELD_RE.finditer(body):
                attrs, tag, ident, rust_type = f.groups()
                fields.append((int(tag), ident, attrs.strip().rstrip(","), " ".join(rust_type.split())))
            messages[f"{module}.{m.group(1)}"] = fields
    return messages


def resolve(module, rust_type):
    """The `module.Name` a message field's Rust type names."""
    inner = re.sub(r"^::core::option::Option<(.*)>$", r"\1", rust_type)
    inner = re.sub(r"^::prost::alloc::vec::Vec<(.*)>$", r"\1", inner)
    inner = re.sub(r"^::prost::alloc::boxed::Box<(.*)>$", r"\1", inner)
    inner = re.sub(
        r"^::prost::alloc::collections::BTreeMap<\s*::prost::alloc::string::String,\s*(.*?),?\s*>$",
        r"\1",
        inner,
    )
    parts = inner.replace(" ", "").split("::")
    parts = [p for p in parts if p]
    here = module.split("/")
    while parts and parts[0] == "super":
        here.pop()
        parts.pop(0)
    return "/".join(here + parts[:-1]) + "." + parts[-1]


OPENAPI_KEY_RE = re.compile(r'"([^"]+)" => Field::Key_(\w+),')
OPENAPI_FIELD_RE = re.compile(r"^    pub (\w+): (.*),$", re.M)


def parse_openapi(root):
    """`{module.Name: ({ident: json_name}, {ident: required})}`."""
    base = os.path.join(root, "src", OPENAPI_VERSION)
    out = {}
    for path in glob.glob(os.path.join(base, "**", "*.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), base)
        text = open(path).read()
        m = re.search(r"^pub struct (\w+) \{$", text, re.M)
        if not m:
            continue
        end = text.index("\n}\n", m.end())
        fields = {
            norm(f.group(1)): not f.group(2).startswith("Option<")
            for f in OPENAPI_FIELD_RE.finditer(text[m.end() : end])
        }
        names = {norm(ident): json for json, ident in OPENAPI_KEY_RE.findall(text)}
        out[norm(f"{module}.{m.group(1)}")] = (names, fields)
    return out


def norm(ident):
    """Joins the two crates' spellings: prost writes `PodDnsConfig` and
    `pod_cid_rs` where k8s-openapi writes `PodDNSConfig` and `pod_cidrs`."""
    return ident.replace("_", "").lower()


def registry_roots(workspace):
    """The kinds api/src/registry.rs serves, as k8s-pb message names."""
    text = open(os.path.join(workspace, "api", "src", "registry.rs")).read()
    roots = []
    for group, version, kind in re.findall(r"check_shape: shape::<(\w+)::(\w+)::(\w+)>", text):
        roots.append(f"api/{group}/{version}.{kind}")
    return roots + EXTRA_ROOTS


def camel(ident):
    head, *rest = ident.split("_")
    return head + "".join(p.capitalize() for p in rest)


def main():
    workspace = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pb = parse_pb(crate_dir(K8S_PB))
    openapi = parse_openapi(crate_dir(K8S_OPENAPI))

    order, seen, queue = [], set(), list(registry_roots(workspace))
    while queue:
        name = queue.pop(0)
        if name in seen or name in SPECIAL:
            continue
        if name not in pb:
            sys.exit(f"message {name} not found in {K8S_PB}")
        seen.add(name)
        order.append(name)
        module = name.rsplit(".", 1)[0]
        for _, _, attrs, rust_type in pb[name]:
            if attrs.startswith("message") or attrs.endswith('"string, message"'):
                queue.append(resolve(module, rust_type))
    index = {name: i for i, name in enumerate(order)}
    pointers = {norm(p): p for p in GO_POINTERS}
    used_pointers = set()
    # Messages Go embeds (VolumeSource in Volume, ProbeHandler in Probe)
    # have no k8s-openapi struct of their own: their JSON names are the
    # embedding struct's.
    inherited = {}

    out = [
        "// @generated by scripts/gen-protobuf-schema.py from the k8s-pb 0.9.0 and",
        "// k8s-openapi 0.29.0 (v1_35) sources; do not edit by hand.",
        "",
        "use super::decode::{Field, Kind, Message, Repeat};",
        "",
        "/// Every message reachable from the kinds knit serves, by index.",
        "pub static MESSAGES: &[Message] = &[",
    ]
    for name in order:
        module, short = name.rsplit(".", 1)
        info = openapi.get(norm(name)) or inherited.get(name)
        if info is None:
            sys.exit(f"message {name} has no k8s-openapi struct")
        names, required = info
        out.append(f"    // {index[name]}")
        out.append("    Message {")
        out.append(f'        name: "{name.replace("/", ".")}",')
        out.append("        fields: &[")
        for tag, ident, attrs, rust_type in sorted(pb[name]):
            json = names.get(norm(ident), "")
            repeat = "Single"
            if attrs.startswith("btree_map"):
                value = attrs.split(",")[1].strip().rstrip('"')
                repeat = "Map"
                scalar = {"string": "String", "bytes": "Bytes"}.get(value)
                kind = f"Kind::{scalar}" if scalar else None
                msg = None if scalar else resolve(module, rust_type)
            else:
                head = attrs.split(",")[0].strip()
                if ", repeated" in attrs:
                    repeat = "Repeated"
                if head == "message":
                    msg = resolve(module, rust_type)
                    kind = None
                else:
                    kind = f"Kind::{SCALARS[head]}"
                    msg = None
            if msg is not None:
                kind = f"Kind::{SPECIAL[msg]}" if msg in SPECIAL else f"Kind::Message({index[msg]})"
            if not json:
                if msg is None or msg in SPECIAL or repeat != "Single":
                    sys.exit(f"{name}.{ident} has no JSON name in {K8S_OPENAPI}")
                repeat = "Inline"
                if norm(msg) not in openapi:
                    inherited.setdefault(msg, info)
            key = norm(f"{short}.{ident}")
            if key in pointers:
                used_pointers.add(pointers[key])
            keep_zero = key in pointers or required.get(norm(ident), False)
            out.append(
                f'            Field {{ tag: {tag}, json: "{json}", kind: {kind}, '
                f"repeat: Repeat::{repeat}, keep_zero: {str(keep_zero).lower()} }},"
            )
        out.append("        ],")
        out.append("    },")
    out.append("];")
    out.append("")
    out.append("/// The index in [`MESSAGES`] of a message, by its k8s-pb path name.")
    out.append("pub fn index_of(name: &str) -> Option<usize> {")
    out.append("    MESSAGES.iter().position(|m| m.name == name)")
    out.append("}")
    for unused in sorted(GO_POINTERS - used_pointers):
        print(f"warning: GO_POINTERS entry {unused} matches no reachable field", file=sys.stderr)
    print("\n".join(out))


if __name__ == "__main__":
    main()
