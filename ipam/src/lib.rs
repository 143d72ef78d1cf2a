//! knit's address math, with no I/O and no async: it owns the rules by which
//! addresses and ports are handed out, and nothing else.
//!
//! - [`ClusterIpAllocator`]: Service virtual IPs out of the service CIDR,
//!   with Kubernetes' static band for requested IPs.
//! - [`NodePortAllocator`]: node ports out of `30000-32767`, same shape.
//! - [`NodeCidrAllocator`]: per-node slices of the cluster CIDR that never
//!   overlap the service CIDR.
//! - [`PodIpAllocator`]: pod IPs inside one node's slice, after the bridge.
//!
//! Every allocator can be rebuilt from what is recorded on objects
//! (`from_used`), which reports duplicates and strays as [`RebuildIssue`]s
//! instead of failing, so a restart is just another rebuild. Randomness is
//! passed in (`&mut impl rand::Rng`) so tests are reproducible.

pub mod banded;
mod bitmap;
pub mod error;
pub mod node_cidr;
pub mod node_port;
pub mod pod_ip;
pub mod rebuild;
pub mod service_ip;
pub mod types;

pub use banded::{BandedAllocator, BandedRange};
pub use error::{Error, Result};
pub use node_cidr::{NodeCidrAllocator, NodeCidrConfig};
pub use node_port::NodePortAllocator;
pub use pod_ip::PodIpAllocator;
pub use rebuild::RebuildIssue;
pub use service_ip::ClusterIpAllocator;
pub use types::{Cidr, ClusterIp, NodePort, PodCidr, PortRange};

/// The article's cluster CIDR, split into node slices.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.0.0.0/14";
/// The article's node slice mask size.
pub const DEFAULT_NODE_MASK: u8 = 24;
/// The article's service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.3.240.0/20";
/// Which usable service address is the cluster DNS's (`10.3.240.10`).
pub const DNS_SERVICE_INDEX: usize = 10;
