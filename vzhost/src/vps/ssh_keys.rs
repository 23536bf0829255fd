//! Authorized SSH keys for a VPS's root (`vzhost create|set --ssh-key`):
//! only lines that are OpenSSH public keys are accepted (so a private key
//! or a stray file is refused before anything is written), and they are
//! added to the keys the VPS already has, never replacing them.

/// Key types OpenSSH's `authorized_keys` takes.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The most of a key file taken.
pub const MAX_KEY_FILE: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("it is a private key; give the public one (the .pub file beside it)")]
    Private,
    #[error("it holds no public key")]
    Empty,
    #[error("it is larger than {MAX_KEY_FILE} bytes")]
    TooBig,
    #[error(
        "line {line} is not an OpenSSH public key (want TYPE BASE64 [COMMENT], TYPE one of ssh-ed25519, ssh-rsa, ecdsa-sha2-*, ...)"
    )]
    NotAKey { line: usize },
}

impl KeyError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        crate::model::ErrorKind::Invalid
    }
}

/// The public keys in `text` (one per line; blank lines and `#` comments
/// skipped), each checked to be `TYPE BASE64 [COMMENT]` with a known type
/// whose base64 blob names that same type, as ssh-keygen writes them.
pub fn parse_keys(text: &str) -> Result<Vec<String>, KeyError> {
    if text.len() > MAX_KEY_FILE {
        return Err(KeyError::TooBig);
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(KeyError::Private);
    }
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !is_public_key(line) {
            return Err(KeyError::NotAKey { line: i + 1 });
        }
        keys.push(line.to_owned());
    }
    if keys.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(keys)
}

fn is_public_key(line: &str) -> bool {
    if line.chars().any(char::is_control) {
        return false;
    }
    let mut fields = line.split_ascii_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return false;
    };
    if !KEY_TYPES.contains(&kind) {
        return false;
    }
    // The blob starts with the type again, as a length-prefixed string.
    let Some(bytes) = base64_decode(blob) else {
        return false;
    };
    let named = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| bytes.get(4..4 + len));
    named == Some(kind.as_bytes()) && bytes.len() > 4 + kind.len()
}

/// Standard base64 with padding; None if it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// `existing` authorized_keys text with each of `keys` not already in it
/// added at the end.
pub(super) fn merged_keys(existing: &str, keys: &[String]) -> String {
    let mut out = existing.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for key in keys {
        if !existing.lines().any(|l| l.trim() == key) {
            out.push_str(key);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key (ssh-keygen output).
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIECspNHQDtZHOX/Us4I2IaWF/kqxpUneA3a/tu/G1tv5 admin@host";

    #[test]
    fn public_keys_are_taken_with_their_comments_and_others_refused() {
        let text = format!("# mine\n\n{ED25519}\n");
        assert_eq!(parse_keys(&text).unwrap(), [ED25519]);
        assert_eq!(
            parse_keys("ssh-ed25519 notbase64!\n"),
            Err(KeyError::NotAKey { line: 1 })
        );
        // A blob of another type than the line says.
        let rsa_named = ED25519.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert_eq!(
            parse_keys(&format!("{ED25519}\n{rsa_named}\n")),
            Err(KeyError::NotAKey { line: 2 })
        );
        assert_eq!(
            parse_keys("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n"),
            Err(KeyError::Private)
        );
        assert_eq!(parse_keys("\n# nothing\n"), Err(KeyError::Empty));
        assert_eq!(
            parse_keys("root:x:0:0::/root:/bin/sh\n"),
            Err(KeyError::NotAKey { line: 1 })
        );
        let escape = format!("{ED25519} \x1b[2J");
        assert!(parse_keys(&escape).is_err(), "no control characters");
    }

    #[test]
    fn base64_decodes_as_standard_and_refuses_the_rest() {
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGl0").unwrap(), b"hit");
        assert_eq!(base64_decode("aA=="), Some(b"h".to_vec()));
        for bad in ["aGk", "a=Gk", "aG*=", "", "aA==aGl0"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_added_once_and_existing_ones_kept() {
        let keys = vec![ED25519.to_owned()];
        assert_eq!(merged_keys("", &keys), format!("{ED25519}\n"));
        let other = "ssh-rsa AAAA other";
        assert_eq!(merged_keys(other, &keys), format!("{other}\n{ED25519}\n"));
        let once = merged_keys("", &keys);
        assert_eq!(merged_keys(&once, &keys), once);
    }
}
