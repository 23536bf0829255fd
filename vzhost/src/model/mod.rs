//! The shared vocabulary at ground level: what every room may name without
//! reaching up into another (VPS names, specs, limits, id ranges, addresses,
//! where a VPS keeps its files, what is reported of it). Plain data and
//! parsing only; no I/O.
mod addr;
mod dir;
mod identity;
mod kind;
mod report;
mod spec;
mod template;
pub mod text;

pub use addr::{AddrError, Subnet, parse_cidr};
pub use dir::{DiskBackend, InitExit, InitKind, Runtime, VpsDir};
pub use identity::DaemonId;
pub use kind::ErrorKind;
pub use report::{NetStats, Status, Verdict, VpsStatus};
pub use spec::{
    IDMAP_FIRST, IDMAP_SIZE, IdMap, Limits, MIN_DISK, Name, Spec, SpecError, parse_size,
    validate_hostname,
};
pub use template::TemplateName;
