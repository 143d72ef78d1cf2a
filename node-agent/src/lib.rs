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
//! Nothing here talks to the API server; the agent's watch loop builds on
//! these pieces.

pub mod error;
pub mod netlink;
pub mod netns;
pub mod sandbox;

pub use error::{Error, Result};
