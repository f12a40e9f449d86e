//! A lock-free "did this database change?" check for WAL databases: the WAL-index header.
//!
//! `PRAGMA data_version` answers the question exactly, but it opens a read transaction, and on a
//! WAL database that means taking and releasing file locks on the `-shm` file (several `fcntl`
//! calls) under a mutex: the largest fixed cost of a tenant request once everything else is
//! served from memory. The WAL-index header at the start of `<db>-shm` (documented in SQLite's
//! "WAL-mode File Format", section "The WAL-Index Header") holds two copies of a 48-byte header
//! whose `iChange` counter, `mxFrame` and checksums move with every commit, whichever process
//! made it. The probe reads it where SQLite itself keeps it, so reading the 96 bytes is a memory
//! copy: no system call, no lock.
//!
//! The probe only ever says "unchanged since you last looked" or "look properly": callers keep
//! a real read (`PRAGMA data_version`, or the query itself) as the check, and skip it while the
//! header bytes stay the same. The order that makes this safe: read the header *before* the real
//! read, and remember the bytes read then. A commit after that read changes the header again, so
//! it is never missed; a torn read (the writer mid-update: SQLite writes the second copy, then
//! the first) only differs from the remembered bytes and costs one real read.
//!
//! Where the probe finds the header, and why that is sound. It never opens the `-shm` file
//! itself: POSIX advisory locks belong to a process and a file, not to a descriptor, so closing
//! any descriptor of that file would drop the locks SQLite's own connections hold on it, and
//! the next process to open the database would believe it was the first, truncate the file and
//! rebuild the index under us (SQLite's "How To Corrupt An SQLite Database File", section 2.2;
//! it took the server down with SIGBUS). Instead the probe asks one of our connections for
//! its database file (`SQLITE_FCNTL_FILE_POINTER`) and that file for the first region of its
//! wal-index (the VFS method `xShmMap`, which the WAL code calls the same way): the region
//! SQLite mapped through its own descriptor, which SQLite keeps mapped, and its locks held, for
//! as long as any connection of this process to the file is open. So whoever holds a probe
//! must keep the connection it was attached through open for as long as the probe. Asking
//! for a region that exists already maps nothing new; the probe asks only after a read on the
//! connection, which opened its WAL and its share of the index, and never asks SQLite to grow
//! the file.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use rusqlite::{ffi, Connection};

/// Both copies of the WAL-index header; the checkpoint info after them does not change on
/// commit and is left out.
pub const HEADER_LEN: usize = 96;

/// The size of a wal-index region, as SQLite's WAL code asks for it (`WALINDEX_PGSZ`).
const REGION_LEN: c_int = 32 * 1024;

pub type Header = [u8; HEADER_LEN];

pub struct WalProbe {
    map: NonNull<u8>,
}

// SAFETY: the region is only ever read, with volatile copies; SQLite connections in this and
// other processes change it concurrently, which is what the probe is for (see the module's
// notes on torn reads).
unsafe impl Send for WalProbe {}
unsafe impl Sync for WalProbe {}

impl WalProbe {
    /// The wal-index header of `conn`'s main database, as SQLite maps it. `None` if the
    /// database is not in WAL mode or SQLite keeps no index for it: callers then check
    /// properly every time. `conn` must stay open for as long as the probe (module notes).
    pub fn attach(conn: &Connection) -> Option<WalProbe> {
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        // A read opens the connection's WAL, and with it its share of the wal-index.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        })
        .ok()?;
        // SAFETY: `conn` is borrowed, so no other thread uses it during these calls. The file
        // pointer SQLite returns stays valid while the connection is open; `xShmMap` with
        // bExtend = 0 only hands out a region that exists (mapping it if this connection's
        // share had not yet), under SQLite's own mutex of the shared-memory node.
        unsafe {
            let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
            let rc = ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&raw mut file).cast::<c_void>(),
            );
            if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
                return None;
            }
            let methods = &*(*file).pMethods;
            if methods.iVersion < 2 {
                return None;
            }
            let map_region = methods.xShmMap?;
            let mut region: *mut c_void = std::ptr::null_mut();
            if map_region(file, 0, REGION_LEN, 0, &mut region) != ffi::SQLITE_OK {
                return None;
            }
            NonNull::new(region.cast::<u8>()).map(|map| WalProbe { map })
        }
    }

    /// The current header bytes.
    pub fn read(&self) -> Header {
        // SAFETY: the region is REGION_LEN >= HEADER_LEN bytes, and stays mapped while the
        // connection it was attached through is open (the holder's duty, see the module notes).
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
