//! knit's node agent, the kernel-facing half: what a kubelet plus a bridge
//! CNI plugin do for the article's pod network.
//!
//! The crate is split the way DESIGN.md asks for OS-facing code:
//!
//! - [`netlink`]: the [`Netlink`](netlink::Netlink) trait (links, addresses,
//!   routes, link attributes, namespace sysctls) with a Linux implementation
//!   over rtnetlink that runs on a thread inside one network namespace, and
//!   a recording in-memory fake for plan tests.
//! - [`netns`]: named network namespaces held open by bind mounts under
//!   `/run/netns` (so `ip netns exec` works on them), behind the
//!   [`Netns`](netns::Netns) trait, plus [`netns::run_in`] to run a closure
//!   on a thread inside a namespace.
//! - [`sandbox`]: the functional core ([`sandbox::node_network`],
//!   [`sandbox::pod_sandbox`]) that turns a node's pod CIDR and a pod into
//!   plain-data plans, and the appliers that make the kernel match them.
//!
//! - [`containers`]: the [`Containers`](containers::Containers) trait, the
//!   boundary between the agent's loop and the process runtime.
//! - [`proxy`]: the service dataplane, kube-proxy's job: Services and
//!   EndpointSlices planned into one nftables table `ip knit` (O(1)
//!   dispatch maps, per-service chains, random endpoint choice, policies,
//!   affinity, masquerading) and applied as one `nft` transaction per
//!   sync, with drift repair and UDP conntrack cleanup.
//! - [`runtime`]: [`ProcessRuntime`](runtime::ProcessRuntime), which runs
//!   containers as processes in their pod's namespaces (restarts, back-off,
//!   CRI-format logs, re-adoption after an agent restart), and [`probe`]:
//!   startup, liveness and readiness probes.
//!
//! Nothing here talks to the API server; the agent's watch loop builds on
//! these pieces: on each pod bound to the node, `pod_sandbox` +
//! `apply_sandbox` (under `spawn_blocking`, with one long-lived
//! [`LinuxNetlink::current`](netlink::LinuxNetlink::current) handle for
//! the node), `remove_sandbox` when it goes, and at start a sweep of
//! [`Netns::list`](netns::Netns::list) through
//! [`SandboxNames::uid_of`](sandbox::SandboxNames::uid_of) to remove the
//! sandboxes of pods that no longer exist. The process runtime can enter a
//! sandbox with [`netns::run_in`] or by the `/run/netns/<name>` file; the
//! host-gw routes fit [`Netlink::add_route`](netlink::Netlink::add_route)
//! with [`PROTO_KNIT`](netlink::PROTO_KNIT).

pub mod agent;
pub mod containers;
pub mod dns;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod probe;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod sandbox;

pub use error::{Error, Result};
