//! Attachments of chat messages and orders: their rows in the tenant's `files` table (name,
//! type, size, uploader) and their bytes under `data/tenants/<uuid>/files/`, stored once per
//! content under their SHA-256 and never under anything a client sent. Whoever may see a
//! message or an order may read its files; adding one to an order takes `orders_edit`, to a
//! chat being a participant.
//!
//! Its SQL goes through the store contract (`store`), as all tenant code is to.
//!
//! The bytes are received into `files/tmp/` first (see [`receive`]), outside any lock. The
//! write that adds the row moves them to their content address inside its `BEGIN IMMEDIATE`
//! transaction, and a write that removes the last row of a content moves its bytes aside
//! inside its own (see [`Trash`]): with the tenant's one writer at a time, a content's bytes
//! are never taken away while a row is being added for them.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::chats::{self, Message};
use super::orders::{visible, Scope};
use super::{now, Problems, Reader, WorkspaceError};
use crate::args;
use crate::store::{RowRef, Sql, StoreError};
use crate::tenancy::Tenant;

pub const MAX_NAME_CHARS: usize = 255;
const MAX_TYPE_CHARS: usize = 127;

/// A file as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileInfo {
    pub id: i64,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub uploaded_by: i64,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
}

const FILE_COLUMNS: &str =
    "id, name, content_type, size, sha256, uploaded_by, created_at, message_id, order_id";

fn file_from_row(row: &dyn RowRef) -> Result<FileInfo, StoreError> {
    Ok(FileInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        content_type: row.get(2)?,
        size: row.get(3)?,
        sha256: row.get(4)?,
        uploaded_by: row.get(5)?,
        created_at: row.get(6)?,
        message_id: row.get(7)?,
        order_id: row.get(8)?,
    })
}

/// The bytes of a file, for download (`None`: the row's content is missing from the disk).
pub fn blob_of(tenant: &Tenant, file: &FileInfo) -> Option<PathBuf> {
    crate::tenancy::content_path(&tenant.files_dir(), &file.sha256)
}

/// A body received into the tenant's `files/tmp/`, with its hash and size. Removed when
/// dropped unless a write has moved it to its content address.
pub struct Upload {
    tmp: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Why [`receive`] stopped.
#[derive(Debug)]
pub enum ReceiveError {
    /// The body passed `max` bytes.
    TooLarge { max: u64 },
    /// Reading the body failed (the client's side: the caller judges it).
    Body(io::Error),
    /// Writing it failed (ours).
    Disk(io::Error),
}

/// Copies `body` to a temporary file of the tenant, hashing it on the way, at most `max`
/// bytes; flushed to the disk before it is returned.
pub fn receive(tenant: &Tenant, mut body: impl Read, max: u64) -> Result<Upload, ReceiveError> {
    let tmp_dir = tenant.files_dir().join("tmp");
    fs::create_dir_all(&tmp_dir).map_err(ReceiveError::Disk)?;
    // Uploads and removed contents left by a process that died (a `.part` being received, a
    // `.gone` moved aside by a delete).
    crate::tenancy::remove_stale(&tmp_dir, "");
    let tmp = tmp_dir.join(format!("{}.part", hex::encode(rand::random::<[u8; 16]>())));
    let mut out = File::create(&tmp).map_err(ReceiveError::Disk)?;
    // From here the file is removed on every way out.
    let mut upload = Upload {
        tmp,
        sha256: String::new(),
        size: 0,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReceiveError::Body(e)),
        };
        upload.size += n as u64;
        if upload.size > max {
            return Err(ReceiveError::TooLarge { max });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ReceiveError::Disk)?;
    }
    out.sync_all().map_err(ReceiveError::Disk)?;
    upload.sha256 = hex::encode(hasher.finalize());
    Ok(upload)
}

/// What a client says of a file: its name and type, checked and cleaned here.
pub struct Described {
    pub name: String,
    pub content_type: String,
}

/// Checks a file's name and type as a client gave them. The name is only ever shown and sent
/// back in `Content-Disposition`; it never names anything on the disk. Path parts are dropped
/// (`../../etc/passwd` is `passwd`), control characters refused.
pub fn describe(name: &str, content_type: Option<&str>) -> Result<Described, WorkspaceError> {
    let mut problems = Problems::default();
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if base.is_empty() || base == "." || base == ".." {
        problems.add("name", "must name a file");
    } else if problems.control_characters("name", &base, false)
        && base.chars().count() > MAX_NAME_CHARS
    {
        problems.add(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
    }
    let content_type = match content_type.map(str::trim) {
        None | Some("") => "application/octet-stream".to_string(),
        Some(t) => {
            let essence = t.split(';').next().unwrap_or_default().trim();
            let valid = essence.len() <= MAX_TYPE_CHARS
                && essence.split_once('/').is_some_and(|(a, b)| {
                    let token = |s: &str| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                    };
                    token(a) && token(b)
                });
            if !valid {
                problems.add("content_type", "must be a media type such as image/png");
            }
            essence.to_ascii_lowercase()
        }
    };
    problems.check()?;
    Ok(Described {
        name: base,
        content_type,
    })
}

/// Storage in use, in bytes: each content once, and the tenant's database file.
pub fn storage_used(db: &dyn Sql) -> Result<i64, StoreError> {
    let one = |sql: &str| -> Result<i64, StoreError> {
        Ok(db.query_row(sql, &[], |r| r.get(0))?.unwrap_or(0))
    };
    let files = one(
        "SELECT coalesce(sum(size), 0) FROM (SELECT max(size) AS size FROM files GROUP BY sha256)",
    )?;
    let file = one("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")?;
    Ok(files + file)
}

/// Whether any row refers to the content `sha256`.
fn referenced(db: &dyn Sql, sha256: &str) -> Result<bool, StoreError> {
    Ok(db
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM files WHERE sha256 = ?1)",
            args![sha256],
            |r| r.get(0),
        )?
        .unwrap_or(false))
}

/// Refuses an upload that would take the tenant past its plan's `storage_mb` (counted inside
/// the write, so concurrent uploads cannot pass it together). A content already stored takes
/// no more room.
fn check_storage(db: &dyn Sql, reader: &Reader, upload: &Upload) -> Result<(), WorkspaceError> {
    let Some(&limit) = reader.limits.0.get("storage_mb") else {
        return Ok(());
    };
    let stored = referenced(db, &upload.sha256)?;
    let adding = if stored { 0 } else { upload.size as i64 };
    let used = storage_used(db)?;
    if used.saturating_add(adding) > limit.saturating_mul(1 << 20) {
        return Err(WorkspaceError::Quota {
            limit_name: "storage_mb",
            limit,
            // In MiB, as the limit, rounded up.
            usage: (used + (1 << 20) - 1) >> 20,
        });
    }
    Ok(())
}

/// Moves an upload to its content address (inside the write's transaction); if that content
/// is there already, the upload is simply dropped.
fn place(tenant: &Tenant, upload: &Upload) -> io::Result<()> {
    let dir = tenant.files_dir();
    let Some(target) = crate::tenancy::content_path(&dir, &upload.sha256) else {
        return Err(io::Error::other("not a SHA-256"));
    };
    if target.exists() {
        return Ok(());
    }
    let parent = target.parent().expect("a blob has a directory");
    fs::create_dir_all(parent)?;
    fs::rename(&upload.tmp, &target)?;
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn insert(
    db: &dyn Sql,
    upload: &Upload,
    what: &Described,
    reader: &Reader,
    message_id: Option<i64>,
    order_id: Option<i64>,
) -> Result<FileInfo, WorkspaceError> {
    db.query_row(
        &format!(
            "INSERT INTO files (sha256, size, name, content_type, uploaded_by, created_at,
                                message_id, order_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING {FILE_COLUMNS}"
        ),
        args![
            &upload.sha256,
            upload.size as i64,
            &what.name,
            &what.content_type,
            reader.user_id,
            now(),
            message_id,
            order_id
        ],
        file_from_row,
    )?
    .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING gave no row".into()).into())
}

/// Whether the reader may add a file to this order: asked before the bytes are received (and
/// again by [`attach_to_order`]), so that a refusal costs no upload.
pub fn may_attach_to_order(
    tenant: &Tenant,
    reader: &Reader,
    order_id: i64,
) -> Result<(), WorkspaceError> {
    tenant.read(|db| {
        visible(db, &Scope::of(reader), order_id)?;
        if !reader.can("orders_edit") {
            return Err(WorkspaceError::forbidden("orders_edit"));
        }
        Ok(())
    })
}

/// Whether the reader may post a file into this chat, asked as [`may_attach_to_order`] is.
pub fn may_post_file(tenant: &Tenant, reader: &Reader, chat_id: i64) -> Result<(), WorkspaceError> {
    tenant.read(|db| chats::check_participant(db, reader, chat_id))
}

/// Adds a file to an order the reader can see and edit.
pub fn attach_to_order(
    tenant: &Tenant,
    reader: &Reader,
    order_id: i64,
    upload: &Upload,
    what: &Described,
) -> Result<FileInfo, WorkspaceError> {
    let scope = Scope::of(reader);
    tenant.write_sql(|db| {
        visible(db, &scope, order_id)?;
        if !reader.can("orders_edit") {
            return Err(WorkspaceError::forbidden("orders_edit"));
        }
        check_storage(db, reader, upload)?;
        let file = insert(db, upload, what, reader, None, Some(order_id))?;
        place(tenant, upload).map_err(disk)?;
        Ok(file)
    })
}

/// Posts a message carrying a file in a chat the reader takes part in; its text is `caption`,
/// or the file's name.
pub fn post_file_message(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    caption: Option<&str>,
    upload: &Upload,
    what: &Described,
) -> Result<Message, WorkspaceError> {
    let body = caption
        .filter(|c| !c.trim().is_empty())
        .unwrap_or(&what.name);
    tenant.write_sql(|db| {
        let mut message = chats::insert_message(db, reader, chat_id, body)?;
        check_storage(db, reader, upload)?;
        let file = insert(db, upload, what, reader, Some(message.id), None)?;
        place(tenant, upload).map_err(disk)?;
        message.files = vec![file];
        Ok(message)
    })
}

fn disk(e: io::Error) -> WorkspaceError {
    WorkspaceError::Db(crate::db::DbError::Io {
        path: PathBuf::from("files"),
        source: e,
    })
}

/// A file the reader may read: that of a message in a chat they can see (not deleted), or of
/// an order they can see. Anything else is `NotFound`.
pub fn get_file(tenant: &Tenant, reader: &Reader, id: i64) -> Result<FileInfo, WorkspaceError> {
    tenant.read(|db| {
        let file = load(db, id)?.ok_or(WorkspaceError::NotFound)?;
        readable(db, reader, &file)?;
        Ok(file)
    })
}

fn load(db: &dyn Sql, id: i64) -> Result<Option<FileInfo>, StoreError> {
    db.query_row(
        &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"),
        args![id],
        file_from_row,
    )
}

fn readable(conn: &dyn Sql, reader: &Reader, file: &FileInfo) -> Result<(), WorkspaceError> {
    if let Some(message_id) = file.message_id {
        let chat_id: Option<i64> = conn.query_row(
            "SELECT chat_id FROM messages WHERE id = ?1 AND deleted_at IS NULL",
            args![message_id],
            |r| r.get(0),
        )?;
        let chat_id = chat_id.ok_or(WorkspaceError::NotFound)?;
        chats::check_access(conn, reader, chat_id)?;
        return Ok(());
    }
    if let Some(order_id) = file.order_id {
        visible(conn, &Scope::of(reader), order_id)?;
        return Ok(());
    }
    Err(WorkspaceError::NotFound)
}

/// The files of an order the reader can see, oldest first.
pub fn order_files(
    tenant: &Tenant,
    reader: &Reader,
    order_id: i64,
) -> Result<Vec<FileInfo>, WorkspaceError> {
    tenant.read(|db| {
        visible(db, &Scope::of(reader), order_id)?;
        Ok(db.query_map(
            &format!("SELECT {FILE_COLUMNS} FROM files WHERE order_id = ?1 ORDER BY id"),
            args![order_id],
            file_from_row,
        )?)
    })
}

/// Fills in the files of each message (one query for the page).
pub(super) fn fill_message_files(db: &dyn Sql, messages: &mut [Message]) -> Result<(), StoreError> {
    let (Some(low), Some(high)) = (
        messages.iter().map(|m| m.id).min(),
        messages.iter().map(|m| m.id).max(),
    ) else {
        return Ok(());
    };
    let files = db.query_map(
        &format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE message_id BETWEEN ?1 AND ?2 ORDER BY id"
        ),
        args![low, high],
        file_from_row,
    )?;
    for file in files {
        if let Some(m) = messages
            .iter_mut()
            .find(|m| Some(m.id) == file.message_id && m.deleted_at.is_none())
        {
            m.files.push(file);
        }
    }
    Ok(())
}

/// Removes a file: its uploader may, and so may whoever may edit its order or manage its chat.
pub fn delete_file(tenant: &Tenant, reader: &Reader, id: i64) -> Result<(), WorkspaceError> {
    let mut trash = Trash::new(tenant);
    let result = tenant.write_sql(|db| {
        let file = load(db, id)?.ok_or(WorkspaceError::NotFound)?;
        readable(db, reader, &file)?;
        let may = file.uploaded_by == reader.user_id
            || match (file.message_id, file.order_id) {
                (_, Some(_)) => reader.can("orders_edit"),
                (Some(_), _) => reader.can(chats::MANAGE_PERMISSION),
                _ => false,
            };
        if !may {
            return Err(WorkspaceError::forbidden("the uploader's, or orders_edit"));
        }
        db.execute("DELETE FROM files WHERE id = ?1", args![id])?;
        trash.release(db, &[file.sha256])?;
        Ok(())
    });
    trash.settle(result.is_ok());
    result
}

/// The contents of `message`'s or `order`'s files, for a write that is about to remove their
/// rows (by cascade, or a soft delete that takes its files with it).
pub(super) fn hashes_of(
    db: &dyn Sql,
    message_id: Option<i64>,
    order_id: Option<i64>,
) -> Result<Vec<String>, StoreError> {
    db.query_map(
        "SELECT sha256 FROM files WHERE message_id = ?1 OR order_id = ?2",
        args![message_id, order_id],
        |r| r.get(0),
    )
}

/// Contents a write stops referring to. Inside the write, [`Trash::release`] moves aside the
/// bytes of every content no row refers to any more; once the write has ended,
/// [`Trash::settle`] removes them (committed) or puts them back (rolled back: the rows are
/// there again). Putting back never harms: a content's bytes are the same whoever wrote them.
pub(super) struct Trash {
    dir: PathBuf,
    moved: Vec<(PathBuf, PathBuf)>,
}

impl Trash {
    pub(super) fn new(tenant: &Tenant) -> Trash {
        Trash {
            dir: tenant.files_dir(),
            moved: Vec::new(),
        }
    }

    pub(super) fn release(
        &mut self,
        db: &dyn Sql,
        hashes: &[String],
    ) -> Result<(), WorkspaceError> {
        for sha in hashes {
            if referenced(db, sha)? {
                continue;
            }
            let Some(blob) = crate::tenancy::content_path(&self.dir, sha) else {
                continue;
            };
            let aside = self.dir.join("tmp").join(format!(
                "{sha}.{}.gone",
                hex::encode(rand::random::<[u8; 8]>())
            ));
            fs::create_dir_all(self.dir.join("tmp")).map_err(disk)?;
            match fs::rename(&blob, &aside) {
                Ok(()) => self.moved.push((blob, aside)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(disk(e)),
            }
        }
        Ok(())
    }

    pub(super) fn settle(self, committed: bool) {
        for (blob, aside) in self.moved {
            let done = if committed {
                fs::remove_file(&aside)
            } else {
                fs::rename(&aside, &blob)
            };
            if let Err(e) = done {
                log::warn!("file {}: {e}", blob.display());
            }
        }
    }
}
