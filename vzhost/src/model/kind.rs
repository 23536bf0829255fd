//! What kind of failure an error is: the API reports it beside the
//! message, and the CLI turns it into its exit code. Every library error
//! type says which kind each of its variants is, in a `kind()` next to it.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The VPS, template, policy or user named does not exist.
    NotFound,
    /// The request clashes with the present state: it already exists, it
    /// is (not) running, it runs and --force was not given, it is busy.
    Conflict,
    /// The request itself is wrong: a bad name, size, address or field.
    Invalid,
    /// The kernel lacks a feature or refused a call.
    Kernel,
    /// Anything else: the host's own state, a helper that went wrong.
    Internal,
}

impl ErrorKind {
    pub const ALL: [Self; 5] = [
        Self::NotFound,
        Self::Conflict,
        Self::Invalid,
        Self::Kernel,
        Self::Internal,
    ];

    /// The name on the wire, as in `{"kind": "not_found"}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::Kernel => "kernel",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_travel_under_their_display_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
        assert!(serde_json::from_str::<ErrorKind>("\"NotFound\"").is_err());
    }
}
