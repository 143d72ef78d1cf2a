//! knit's end-to-end harness: drives the real `knit` binary as a separate
//! process, the way users and CI run it.
//!
//! - [`server`] finds the binary, starts `knit server` on a free loopback port
//!   with its own data directory, waits for `/readyz`, and stops or kills it
//!   (a Drop guard makes sure no server outlives its test).
//! - [`kubectl`] runs the real kubectl v1.35 against a server, each with its
//!   own `HOME`, under a time limit.
//! - [`http`] is a tiny HTTP/1.1 JSON client over hyper 1 with keep-alive
//!   connections, plus a reader for newline-delimited JSON streams (watch).
//!
//! - [`lab`] gives a root test its own `knit lab` (a Drop guard runs
//!   `knit lab down`), the real kubectl against it, and the diagnostics a
//!   failure message needs.
//! - [`stats`] holds the benchmarks' percentiles and `/proc` readings.
//!
//! The tests in `tests/` use these; so do the benchmark binaries
//! (`knit-bench`, knit against etcd; `knit-endpoints-bench`, readiness to
//! EndpointSlice at scale; see `e2e/README.md`).

pub mod http;
pub mod kubectl;
pub mod lab;
pub mod server;
pub mod stats;

pub use http::{HttpClient, HttpError, JsonLines, JsonResponse};
pub use kubectl::{Kubectl, Run};
pub use server::{KnitServer, ServerError, knit_bin};
