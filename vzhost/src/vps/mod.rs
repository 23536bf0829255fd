//! Virtual private servers: the state store on disk and the lifecycle that
//! acts on them.
pub mod error;
pub mod lifecycle;
pub mod store;
