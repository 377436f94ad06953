//! Writing a file so that it is never half there: the text goes to a temporary file beside
//! it (created exclusively, with its final mode, synced), which then takes the file's name in
//! one step: linked when nothing may be replaced (so a file that appeared meanwhile is still
//! not overwritten), renamed when replacing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SetupError;

/// Replace an existing file, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Keep,
    Replace,
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> SetupError {
    move |source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            SetupError::Permission
        } else {
            SetupError::Io { what, source }
        }
    }
}

/// Writes `text` to `path` with `mode`, creating its directory (0755) if needed. With
/// `Existing::Keep` an existing file is an error and stays as it was.
pub(crate) fn write_atomically(
    path: &Path,
    text: &str,
    mode: u32,
    existing: Existing,
) -> Result<(), SetupError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_error(format!("creating {}", dir.display())))?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| SetupError::Input(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp); // a leftover of a killed earlier run
    let result = write_new(&tmp, text, mode).and_then(|()| match existing {
        Existing::Replace => std::fs::rename(&tmp, path).map_err(io_error(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        ))),
        Existing::Keep => std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                SetupError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(format!("creating {}", path.display()))(e)
            }
        }),
    });
    let _ = std::fs::remove_file(&tmp);
    result?;
    // The new name is only durable once the directory is.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_new(tmp: &Path, text: &str, mode: u32) -> Result<(), SetupError> {
    let what = || format!("writing {}", tmp.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_error(what()))?;
    // The umask may have taken bits away: the mode is the one asked for.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io_error(what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fta-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keep_never_overwrites_and_replace_does() {
        let d = dir("keep");
        let path = d.join("sub/ftagent.toml");
        write_atomically(&path, "one\n", 0o600, Existing::Keep).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = write_atomically(&path, "two\n", 0o600, Existing::Keep).unwrap_err();
        assert!(matches!(e, SetupError::Exists { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        write_atomically(&path, "three\n", 0o644, Existing::Replace).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(d.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_in_the_way_is_an_error() {
        let d = dir("blocked");
        std::fs::create_dir_all(d.join("ftagent.toml")).unwrap();
        let e = write_atomically(&d.join("ftagent.toml"), "x", 0o600, Existing::Keep).unwrap_err();
        assert!(matches!(e, SetupError::Exists { .. }), "{e}");
        let e =
            write_atomically(&d.join("ftagent.toml"), "x", 0o600, Existing::Replace).unwrap_err();
        assert!(matches!(e, SetupError::Io { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
