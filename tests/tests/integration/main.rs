//! vzhost integration tests. Run natively by `cargo xtask test` (the `lsm::`
//! tests are filtered out there when the host refuses LSM programs) and in
//! the VM on every kernel of the matrix (all but `prometheus::`, whose
//! server is not carried into the VM).
mod accounting;
mod bench;
mod cleanup;
mod concurrency;
mod console;
mod credentials;
mod daemons;
mod debian;
mod delegation;
mod disk;
mod distro;
mod doctor;
mod egress;
mod hardening;
mod hardening_api;
mod hardening_files;
mod init_exit;
mod limits;
mod lsm;
mod metrics;
mod network;
mod network_guards;
mod network_host;
mod network_routed;
mod network_v6;
mod parallel;
mod partitions;
mod pinning;
mod policy;
mod prometheus;
mod systemd;
