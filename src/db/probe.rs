//! A lock-free "did this database change?" check for WAL databases: the WAL-index header.
//!
//! `PRAGMA data_version` answers the question exactly, but it opens a read transaction, and on a
//! WAL database that means taking and releasing file locks on the `-shm` file (several `fcntl`
//! calls) under a mutex: the largest fixed cost of a tenant request once everything else is
//! served from memory. The WAL-index header at the start of `<db>-shm` (documented in SQLite's
//! "WAL-mode File Format", section "The WAL-Index Header") holds two copies of a 48-byte header
//! whose `iChange` counter, `mxFrame` and checksums move with every commit, whichever process
//! made it. The probe maps the first page of that file, as SQLite itself does, so reading the
//! 96 bytes is a memory copy: no system call, no lock, and no file descriptor kept (a mapping
//! outlives the descriptor it was made from, which keeps tenant pools within their descriptor
//! budget).
//!
//! The probe only ever says "unchanged since you last looked" or "look properly": callers keep
//! a real read (`PRAGMA data_version`, or the query itself) as the check, and skip it while the
//! header bytes stay the same. The order that makes this safe: read the header *before* the real
//! read, and remember the bytes read then. A commit after that read changes the header again, so
//! it is never missed; a torn read (the writer mid-update: SQLite writes the second copy, then
//! the first) only differs from the remembered bytes and costs one real read.
//!
//! Whoever holds a probe must keep a connection to that database open for as long as the probe:
//! while one is open anywhere, SQLite neither truncates the `-shm` file (reading a mapping past
//! the end of a truncated file would fault) nor replaces it with a new one (the probe would then
//! watch a file nobody writes). SQLite only does either when a connection opens or closes the
//! database with no other connection to it left.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

/// Both copies of the WAL-index header; the checkpoint info after them does not change on
/// commit and is left out.
pub const HEADER_LEN: usize = 96;

/// What is mapped: SQLite sizes the `-shm` file in 32 KiB regions, so a file in use is at
/// least this long.
const MAP_LEN: usize = 4096;

pub type Header = [u8; HEADER_LEN];

pub struct WalProbe {
    map: NonNull<u8>,
}

// SAFETY: the mapping is read-only to us and only ever read with volatile copies; SQLite
// processes change it concurrently, which is what the probe is for (see the module's notes on
// torn reads).
unsafe impl Send for WalProbe {}
unsafe impl Sync for WalProbe {}

impl WalProbe {
    /// Maps the start of `<db_path>-shm` read-only. `None` if it does not exist or is shorter
    /// than a page (the database is not in WAL mode, or no connection has read it yet):
    /// callers then check properly every time.
    pub fn open(db_path: &Path) -> Option<WalProbe> {
        let mut name = db_path.as_os_str().to_os_string();
        name.push("-shm");
        let shm = File::open(name).ok()?;
        let len = shm.metadata().ok()?.len();
        if len < MAP_LEN as u64 {
            return None;
        }
        // SAFETY: a fresh shared read-only mapping of a file at least MAP_LEN long; nothing
        // else is told its address. The descriptor may close right after (POSIX keeps the
        // mapping).
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                shm.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(map.cast::<u8>()).map(|map| WalProbe { map })
    }

    /// The current header bytes.
    pub fn read(&self) -> Header {
        // SAFETY: the mapping is MAP_LEN >= HEADER_LEN bytes, and stays valid while a
        // connection to the database is open (the holder's duty, see the module notes).
        // In words: a volatile read of a byte array is done a byte at a time.
        let words =
            unsafe { std::ptr::read_volatile(self.map.as_ptr().cast::<[u64; HEADER_LEN / 8]>()) };
        let mut header = [0u8; HEADER_LEN];
        for (bytes, word) in header.chunks_exact_mut(8).zip(words) {
            bytes.copy_from_slice(&word.to_ne_bytes());
        }
        // What the caller reads next (the database) must not be read before the header.
        fence(Ordering::Acquire);
        header
    }
}

impl Drop for WalProbe {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`, once.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), MAP_LEN);
        }
    }
}
