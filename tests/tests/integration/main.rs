//! vzhost integration tests. Run natively by `cargo xtask test` (the `lsm::`
//! tests are filtered out there when the host refuses LSM programs) and in
//! the VM on every kernel of the matrix, where nothing is skipped.
mod disk;
mod doctor;
mod limits;
mod lsm;
mod network;
mod partitions;
