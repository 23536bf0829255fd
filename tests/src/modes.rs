//! Networking tests run once per network mode: `net_test!` makes
//! `NAME::routed` and `NAME::bridged` of one body, and every daemon the
//! body starts on its thread runs in that mode (with a cgroup name of its
//! own, so both passes may run side by side).
use std::cell::Cell;

pub use vzhost::net::NetMode;

thread_local! {
    static MODE: Cell<Option<NetMode>> = const { Cell::new(None) };
}

/// Run `test` with every daemon this thread starts in network mode `mode`.
pub fn in_mode<T>(mode: NetMode, test: impl FnOnce() -> T) -> T {
    MODE.set(Some(mode));
    let out = test();
    MODE.set(None);
    out
}

/// The network mode of daemons this thread starts (None: the default).
pub fn current_mode() -> Option<NetMode> {
    MODE.get()
}

/// A `#[test]` run once per network mode, as `NAME::routed` and
/// `NAME::bridged`.
#[macro_export]
macro_rules! net_test {
    ($(#[$attr:meta])* fn $name:ident() -> $ret:ty $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            fn body() -> $ret $body

            #[test]
            fn routed() -> $ret {
                $crate::in_mode($crate::NetMode::Routed, body)
            }

            #[test]
            fn bridged() -> $ret {
                $crate::in_mode($crate::NetMode::Bridged, body)
            }
        }
    };
}
