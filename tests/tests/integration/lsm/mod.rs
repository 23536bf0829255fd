//! Tests that need BPF LSM: they run in the VM.
mod doctor;
mod file_open;
