//! The crate's error type. Messages are worded so the apiserver can put them
//! straight into a Kubernetes 422 `Status` (they match kube-apiserver's).

use crate::types::{Cidr, PortRange};

/// Everything that can go wrong in knit's address math.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A requested IP is already held by someone else.
    #[error("provided IP is already allocated")]
    IpAllocated,
    /// A requested IP lies outside the allocator's usable addresses.
    #[error("provided IP is not in the valid range. The range of valid IPs is {range}")]
    IpNotInRange {
        /// The CIDR the allocator serves.
        range: Cidr,
    },
    /// A requested IP is the node bridge's own address.
    #[error("provided IP {ip} is reserved for the node bridge")]
    IpReserved {
        /// The bridge address.
        ip: std::net::IpAddr,
    },
    /// No free address is left.
    #[error("range is full")]
    IpRangeFull,
    /// A requested port is already held by someone else.
    #[error("provided port is already allocated")]
    PortAllocated,
    /// A requested port lies outside the allocator's range.
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    PortNotInRange {
        /// The range the allocator serves.
        range: PortRange,
    },
    /// No free port is left.
    #[error("range is full")]
    PortRangeFull,
    /// Every node slice of the cluster CIDR is taken (kube-controller-manager's
    /// `CIDRNotAvailable`).
    #[error("no remaining CIDRs in the cluster CIDR {cluster}")]
    CidrNotAvailable {
        /// The cluster CIDR being split.
        cluster: Cidr,
    },
    /// A CIDR is not one of the node slices of the cluster CIDR.
    #[error("{cidr} is not a /{mask} slice of the cluster CIDR {cluster}")]
    NotASlice {
        /// The offending CIDR.
        cidr: Cidr,
        /// The node mask size.
        mask: u8,
        /// The cluster CIDR being split.
        cluster: Cidr,
    },
    /// A node slice overlaps the service CIDR and may never be handed out.
    #[error("{cidr} overlaps the service CIDR {service}")]
    OverlapsServiceCidr {
        /// The offending slice.
        cidr: Cidr,
        /// The service CIDR it overlaps.
        service: Cidr,
    },
    /// A string is not a CIDR.
    #[error("invalid CIDR address: {0}")]
    InvalidCidr(String),
    /// A string is not an IP address.
    #[error("invalid IP address: {0}")]
    InvalidIp(String),
    /// A string is not a port range (`30000-32767`).
    #[error("invalid port range: {0}")]
    InvalidPortRange(String),
    /// A range holds no usable address.
    #[error("the CIDR {cidr} has no usable addresses")]
    RangeTooSmall {
        /// The offending CIDR.
        cidr: Cidr,
    },
    /// A range is too large to be tracked in a bitmap.
    #[error("the CIDR {cidr} is too large: at most {max_bits} host bits are supported")]
    RangeTooLarge {
        /// The offending CIDR.
        cidr: Cidr,
        /// The largest number of host bits accepted.
        max_bits: u8,
    },
    /// The node mask size does not fit the cluster CIDR.
    #[error(
        "invalid node mask size /{mask} for the cluster CIDR {cluster}: it must lie between /{} and /{} and split it into at most 2^16 slices",
        cluster.prefix_len(), cluster.max_prefix_len()
    )]
    InvalidNodeMask {
        /// The requested mask size.
        mask: u8,
        /// The cluster CIDR being split.
        cluster: Cidr,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
