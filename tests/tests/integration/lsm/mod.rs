//! Tests that need BPF LSM: they run in the VM.
mod doctor;
mod escape;
mod file_open;
mod shipped;
mod sockets;
mod swap;
