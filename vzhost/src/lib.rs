//! vzhost: many virtual private servers on one Linux kernel, kept apart by
//! the Kernel Service Abstraction Layer (KSAL), a set of eBPF programs.
pub mod cgroup;
pub mod daemon;
pub mod doctor;
pub mod enforce;
pub mod ksal;
pub mod metrics;
pub mod model;
pub mod net;
pub mod ns;
pub mod policy;
pub mod rootfs;
pub mod sys;
pub mod vps;

#[cfg(test)]
mod layering;
