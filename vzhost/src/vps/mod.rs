//! Virtual private servers: the state store on disk and the host that acts
//! on them, a file per verb.
mod console;
mod create;
mod destroy;
pub mod error;
mod exec;
pub mod host;
mod init;
mod passwd;
pub mod ranges;
mod report;
mod run;
mod set;
pub mod ssh_keys;
pub mod start;
pub mod store;
mod watch;

pub use create::CreateRequest;
pub use error::{LifecycleError, Result};
pub use host::Host;
pub use passwd::{PASSWD_HELPER, ShadowError, passwd_helper};
