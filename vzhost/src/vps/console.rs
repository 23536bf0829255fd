//! What `vzhost console` needs of a VPS: where its console keeper
//! listens while it runs, and what its console recorded (running or not).
use std::{
    io::{self, Read as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::{
    error::{LifecycleError, Result},
    host::Host,
};
use crate::{model::Name, ns::console::CONSOLE_CAP};

impl Host {
    /// The socket of running VPS `name`'s console keeper.
    pub fn console_socket(&self, name: &str) -> Result<PathBuf> {
        let name = Name::new(name)?;
        self.store.load(&name)?;
        self.live_runtime(&name)
            .ok_or_else(|| LifecycleError::NotRunning(name.to_string()))?;
        Ok(self.store.dir(&name).console_socket())
    }

    /// What VPS `name`'s console recorded, oldest first (at most twice
    /// [`CONSOLE_CAP`]), as the VPS wrote it: control characters and all.
    pub fn console_log(&self, name: &str) -> Result<Vec<u8>> {
        let name = Name::new(name)?;
        self.store.load(&name)?;
        let log = self.store.dir(&name).console_log();
        let both = || -> io::Result<Vec<u8>> {
            let mut bytes = read_capped(&log.with_extension("log.1"))?;
            bytes.extend(read_capped(&log)?);
            Ok(bytes)
        };
        both().map_err(|source| LifecycleError::Io {
            name: name.to_string(),
            what: "read its console log".into(),
            source,
        })
    }
}

/// File `path` (never through a symlink), at most [`CONSOLE_CAP`] bytes;
/// empty if there is none (a VPS never started).
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut bytes = Vec::new();
    match file {
        Ok(f) => {
            f.take(CONSOLE_CAP).read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(bytes)
}
