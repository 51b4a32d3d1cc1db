//! Bearer tokens read from files (the server's `token_file`, a registry locator's `tokens`, the
//! `--token-file` of `elasticd register`): one reader with one set of checks, compared in constant
//! time and never printed.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A token is short; a larger file here is a mistake, not a token.
pub const MAX_TOKEN_FILE: u64 = 4096;

/// Why a token file can't be used; the caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// It could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A directory, FIFO, device: reading one would block or mean nothing.
    #[error("is not a regular file")]
    NotFile,
    /// Not text.
    #[error("is not UTF-8 text")]
    NotText,
    /// Its first line is blank.
    #[error("is empty; it must hold the token on its first line")]
    Empty,
}

/// A token read from a file, compared in constant time and never printed.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl Secret {
    /// Reads the first line of the regular file `path` (at most [`MAX_TOKEN_FILE`] bytes), and
    /// warns when other users can read it.
    pub fn read(path: &Path) -> Result<Secret, SecretError> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(SecretError::NotFile);
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "token file {} can be read by other users; chmod 600 it",
                path.display()
            );
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE).read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes).map_err(|_| SecretError::NotText)?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(token.to_string()))
    }

    /// A secret holding `text` (tests, and tokens that don't come from files).
    pub fn from_text(text: &str) -> Secret {
        Secret(text.to_string())
    }

    /// Compares in constant time, so response timing says nothing about the token.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let mine = self.0.as_bytes();
        mine.len() == offered.len() && bool::from(mine.ct_eq(offered))
    }

    /// The token itself, to send it; never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_of_a_regular_file_is_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  s3cret \nsecond line\n").unwrap();
        let secret = Secret::read(&path).unwrap();
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret2"));
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(<hidden>)");

        std::fs::write(&path, "\nlater\n").unwrap();
        assert!(matches!(Secret::read(&path), Err(SecretError::Empty)));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(Secret::read(&path), Err(SecretError::NotText)));
        assert!(matches!(
            Secret::read(dir.path()),
            Err(SecretError::NotFile)
        ));
        assert!(matches!(
            Secret::read(&dir.path().join("missing")),
            Err(SecretError::Io(_))
        ));
    }

    #[test]
    fn only_the_first_kilobytes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let long = "x".repeat(usize::try_from(MAX_TOKEN_FILE).unwrap() * 2);
        std::fs::write(&path, &long).unwrap();
        let secret = Secret::read(&path).unwrap();
        assert_eq!(secret.expose().len(), 4096);
    }
}
