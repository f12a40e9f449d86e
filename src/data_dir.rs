//! The server's claim on its data directory: one `tenantd serve` per directory, and a directory
//! it can write to, both checked before anything is served.
//!
//! The lock is an `flock` on a file of our own, `tenantd.lock`, never on a database file: SQLite
//! uses POSIX locks on those, which belong to the process and the file, and a lock of ours there
//! (or a descriptor of ours closed there) would interfere with SQLite's. `flock` locks belong to
//! the open file description, so the kernel drops ours when the process ends, however it ends;
//! a stale lock file left behind is harmless. The CLI takes no lock: it is meant to run beside
//! the server.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::catalog::{CENTRAL_DB, TENANTS_DIR};

pub const LOCK_FILE: &str = "tenantd.lock";

/// Held for as long as the server runs; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug)]
pub enum ClaimError {
    /// Another server holds the lock; its process id, if it wrote one.
    Taken { dir: PathBuf, pid: Option<u32> },
    /// The directory (or what is in it) cannot be written.
    NotWritable { path: PathBuf, source: io::Error },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Taken { dir, pid } => {
                write!(
                    f,
                    "another tenantd server is running on the data directory {}",
                    dir.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (process {pid})")?;
                }
                write!(
                    f,
                    "; stop it first, or give this one its own directory with --data"
                )
            }
            ClaimError::NotWritable { path, source } => write!(
                f,
                "cannot write to {} ({source}): the server needs to write to its data directory \
                 (its catalog, tenant files, and the -wal and -shm files SQLite keeps beside \
                 them); fix the permissions or choose another directory with --data",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ClaimError {}

/// Creates `dir` (and its tenants directory) if needed, checks that the server can write there,
/// and takes the lock that keeps a second server out.
pub fn claim(dir: &Path) -> Result<DataDirLock, ClaimError> {
    let not_writable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClaimError::NotWritable { path, source }
    };
    let tenants = dir.join(TENANTS_DIR);
    fs::create_dir_all(&tenants).map_err(not_writable(&tenants))?;
    let lock_path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(not_writable(&lock_path))?;
    // SAFETY: flock on a descriptor we own and keep open in the returned value.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(ClaimError::Taken {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        return Err(not_writable(&lock_path)(err));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(not_writable(&lock_path))?;
    // The directory itself may refuse new files while the lock file was already there; SQLite
    // creates the -wal and -shm files of the catalog and of each tenant in these two.
    for place in [dir, tenants.as_path()] {
        probe_create(place).map_err(not_writable(place))?;
    }
    // An existing catalog we may not write would open read-only and fail every write.
    // access(2) asks without opening the file, and answers for the user we run as.
    let central = dir.join(CENTRAL_DB);
    if central.exists() {
        let c_path = std::ffi::CString::new(central.as_os_str().as_encoded_bytes())
            .map_err(|e| not_writable(&central)(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: a NUL-terminated path that lives across the call.
        if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
            return Err(not_writable(&central)(io::Error::last_os_error()));
        }
    }
    Ok(DataDirLock { _file: file })
}

/// Creates and removes a file in `dir`: the only sure test that new files can be made there.
fn probe_create(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path()).unwrap();
        match claim(dir.path()) {
            Err(ClaimError::Taken { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Taken, got {other:?}"),
        }
        drop(first);
        claim(dir.path()).expect("free again");
        assert!(dir.path().join(TENANTS_DIR).is_dir());
    }
}
