//! Template names: validated like VPS names, so a name can only ever be a
//! directory directly under the templates directory (never `..`, `/`, or
//! anything a path could be built from).
use serde::{Deserialize, Serialize};

use super::{Name, SpecError};

/// A validated template name: `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateName(String);

impl TemplateName {
    pub fn new(name: &str) -> Result<Self, SpecError> {
        Name::new(name)
            .map(|n| Self(n.into()))
            .map_err(|_| SpecError::Field {
                field: "template",
                value: name.to_owned(),
                why:
                    "use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit; \
                      `vzhost template list` shows the templates"
                        .into(),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TemplateName {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        Self::new(&s)
    }
}

impl From<TemplateName> for String {
    fn from(n: TemplateName) -> String {
        n.0
    }
}

impl std::fmt::Display for TemplateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_not_template_names() {
        for bad in [
            "../../../../etc",
            "/srv/root",
            "a/b",
            "..",
            ".",
            "",
            "Debian",
            "-x",
        ] {
            assert!(TemplateName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TemplateName::new("debian-12").unwrap().as_str(),
            "debian-12"
        );
    }

    #[test]
    fn a_spec_with_a_path_for_a_template_does_not_load() {
        let err = serde_json::from_str::<TemplateName>("\"../../x\"").unwrap_err();
        assert!(err.to_string().contains("invalid template"), "{err}");
    }
}
