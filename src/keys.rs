//! Client key files: read once at start, refused when anyone but the
//! owner can read them, and kept out of `Debug` output and logs.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A client's shared secret. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a key file cannot be used; `Display` is the problem, `fix` the cure.
#[derive(Debug)]
pub enum KeyFileError {
    Unreadable(std::io::Error),
    OpenToOthers(u32),
    Empty,
}

impl KeyFileError {
    pub fn fix(&self, path: &Path) -> String {
        match self {
            KeyFileError::Unreadable(_) => format!(
                "create it (e.g. head -c 32 /dev/urandom | base64 > {0}; chmod 600 {0}) \
                 and make it readable by the service user",
                path.display()
            ),
            KeyFileError::OpenToOthers(_) => format!(
                "run chmod 600 {} (owned by the user knock-otp runs as)",
                path.display()
            ),
            KeyFileError::Empty => format!("write the client's key into {}", path.display()),
        }
    }
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Unreadable(e) => write!(f, "key file cannot be read: {e}"),
            KeyFileError::OpenToOthers(mode) => {
                write!(f, "key file has mode {mode:04o}, open to group or others")
            }
            KeyFileError::Empty => f.write_str("key file is empty"),
        }
    }
}

/// Reads a key file. One trailing newline (`\n` or `\r\n`) is not part of
/// the key, so `echo secret > file` works as the legacy `$key = "secret"`.
pub fn read_key_file(path: &Path) -> Result<Secret, KeyFileError> {
    let meta = fs::metadata(path).map_err(KeyFileError::Unreadable)?;
    let mode = meta.permissions().mode() & 0o7777;
    // A refusal, not a warning: a key others can read is a key others have.
    if mode & 0o077 != 0 {
        return Err(KeyFileError::OpenToOthers(mode));
    }
    let mut bytes = fs::read(path).map_err(KeyFileError::Unreadable)?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(Secret(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn key_file(contents: &[u8], mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents).unwrap();
        fs::set_permissions(f.path(), fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn one_trailing_newline_is_not_part_of_the_key() {
        let f = key_file(b"s3cret\n", 0o600);
        assert_eq!(read_key_file(f.path()).unwrap().expose(), b"s3cret");
        let f = key_file(b"s3cret\r\n", 0o600);
        assert_eq!(read_key_file(f.path()).unwrap().expose(), b"s3cret");
        let f = key_file(b"s3cret\n\n", 0o600);
        assert_eq!(read_key_file(f.path()).unwrap().expose(), b"s3cret\n");
    }

    #[test]
    fn a_key_file_open_to_the_group_or_others_is_refused() {
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let f = key_file(b"k", mode);
            assert!(matches!(
                read_key_file(f.path()),
                Err(KeyFileError::OpenToOthers(_))
            ));
        }
    }

    #[test]
    fn an_empty_key_file_is_refused() {
        let f = key_file(b"\n", 0o600);
        assert!(matches!(read_key_file(f.path()), Err(KeyFileError::Empty)));
    }

    #[test]
    fn a_secret_does_not_show_in_debug_output() {
        assert_eq!(
            format!("{:?}", Secret::new(b"hunter2".to_vec())),
            "Secret(..)"
        );
    }
}
