//! The one integration-test binary. Submodules:
//! - `lab`: network namespaces, veth, traffic and arrival counters, always cleaned up;
//! - `cli`: the real binary's argument and configuration handling (no root needed);
//! - `table`: issue 2 — our table in the kernel of a lab namespace, real packets dropped.

mod cli;
mod lab;
mod table;
