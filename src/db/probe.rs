//! A lock-free "did this database change?" check for WAL databases: the WAL-index header.
//!
//! `PRAGMA data_version` answers the question exactly, but it opens a read transaction, and on a
//! WAL database that means taking and releasing file locks on the `-shm` file (several `fcntl`
//! calls) under a mutex: the largest fixed cost of a tenant request once everything else is
//! served from memory. The WAL-index header at the start of `<db>-shm` (documented in SQLite's
//! "WAL-mode File Format", section "The WAL-Index Header") holds two copies of a 48-byte header
//! whose `iChange` counter, `mxFrame` and checksums move with every commit, whichever process
//! made it. Reading those 96 bytes costs one `pread`, takes no lock, and is coherent with the
//! `mmap` writes SQLite makes to the same file.
//!
//! The probe only ever says "unchanged since you last looked" or "look properly": callers keep
//! `PRAGMA data_version` as the real check and skip it while the header bytes stay the same.
//! The order that makes this safe: read the header *before* the real check, and remember the
//! bytes read then. A commit after that read changes the header again, so it is never missed;
//! a torn read (the writer mid-update) only differs from the remembered bytes and costs one real
//! check.
//!
//! The `-shm` file keeps its inode while any connection to the database is open (SQLite only
//! truncates or unlinks it when the last connection anywhere closes), so whoever holds a probe
//! must keep a connection to that database open for as long as the probe.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Both copies of the WAL-index header; the checkpoint info after them does not change on
/// commit and is left out.
pub const HEADER_LEN: usize = 96;

pub type Header = [u8; HEADER_LEN];

pub struct WalProbe {
    shm: File,
}

impl WalProbe {
    /// Opens `<db_path>-shm` read-only. `None` if it does not exist (the database is not in
    /// WAL mode, or no connection has read it yet): callers then check properly every time.
    pub fn open(db_path: &Path) -> Option<WalProbe> {
        let mut name = db_path.as_os_str().to_os_string();
        name.push("-shm");
        let shm = File::open(name).ok()?;
        Some(WalProbe { shm })
    }

    /// The current header bytes; `None` if they could not be read in full.
    pub fn read(&self) -> Option<Header> {
        let mut header = [0u8; HEADER_LEN];
        match self.shm.read_exact_at(&mut header, 0) {
            Ok(()) => Some(header),
            Err(_) => None,
        }
    }
}
