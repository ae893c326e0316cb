//! Owner-only files for key material (mode 0600, parent folders 0700).

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::CryptoError;

fn write_error(path: &Path, source: std::io::Error) -> CryptoError {
    CryptoError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the missing parent folders of `path`, readable by the owner only.
fn create_parents(path: &Path) -> Result<(), CryptoError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| write_error(parent, e)),
        _ => Ok(()),
    }
}

/// Creates `path` with mode 0600 and writes `contents`; fails with
/// [`CryptoError::AlreadyExists`] if the file exists. A failed write leaves
/// no partial file behind.
pub(crate) fn write_new_private(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    create_parents(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => CryptoError::AlreadyExists(path.to_path_buf()),
            _ => write_error(path, e),
        })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(write_error(path, e));
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, replacing any existing file
/// atomically: the data goes to a fresh 0600 file beside it, then is renamed
/// over `path`. Readers never see a partial file, and a previous file's
/// looser mode is not inherited.
pub(crate) fn replace_private(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| write_error(path, std::io::Error::other("not a file path")))?;
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(|e| CryptoError::NoRandomness(e.to_string()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = path.with_file_name(tmp_name);
    write_new_private(&tmp, contents)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_error(path, e)
    })
}
