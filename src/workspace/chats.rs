//! Chats of a tenant: the chats themselves, who takes part in them, their
//! messages, and how far each participant has read.
//!
//! Who may do what:
//! - See a chat (its summary, participants and messages): its participants;
//!   `admin` and `chats_view_all` see every chat. Other chats are `NotFound`.
//! - Create a chat: `chats_create`; the creator becomes a participant.
//! - Manage a chat (rename, archive, add or remove participants): a
//!   participant holding `chats_create`, or an admin (who need not take part,
//!   and so can add themselves). `chats_view_all` alone only reads: seeing
//!   every chat is an oversight role, not a say in other people's
//!   conversations. Anyone may remove themselves.
//! - Post: participants only ([`PARTICIPANTS_ONLY`] otherwise); edit and
//!   delete: the author only ([`OWN_MESSAGES_ONLY`]). An archived chat is
//!   read-only for messages until it is unarchived.
//! - A direct chat has exactly two participants when created and takes no
//!   one else later.
//!
//! Its SQL goes through the store contract (`store`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{now, Page, Problems, Reader, WorkspaceError};
use crate::args;
use crate::store::{RowRef, Sql, StoreError};
use crate::tenancy::Tenant;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 10_000;
/// Participants a new chat may name at once.
pub const MAX_INITIAL_PARTICIPANTS: usize = 1000;

/// `Forbidden` reason: posting and reading marks are for participants.
pub const PARTICIPANTS_ONLY: &str = "chat participants only";
/// `Forbidden` reason: a message is edited or deleted by its author only.
pub const OWN_MESSAGES_ONLY: &str = "own messages only";
/// The permission named when managing a chat is refused.
pub(super) const MANAGE_PERMISSION: &str = "chats_create";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Direct,
    Group,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Direct => "direct",
            ChatKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<ChatKind> {
        match s {
            "direct" => Some(ChatKind::Direct),
            "group" => Some(ChatKind::Group),
            _ => None,
        }
    }
}

/// A chat row.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Chat {
    pub id: i64,
    pub title: String,
    pub kind: ChatKind,
    pub created_by: i64,
    pub created_at: String,
    pub updated_at: String,
    pub archived_at: Option<String>,
}

/// A chat as one reader sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChatSummary {
    #[serde(flatten)]
    pub chat: Chat,
    /// Whether the reader takes part (may post); false for chats seen only
    /// through `chats_view_all` or admin.
    pub participant: bool,
    pub participant_count: i64,
    /// Messages after the reader's last read one, by others, not deleted;
    /// always 0 for a non-participant.
    pub unread_count: i64,
    /// The newest message that is not deleted.
    pub last_message: Option<Message>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Participant {
    pub user_id: i64,
    pub joined_at: String,
    pub last_read_message_id: Option<i64>,
}

/// A message as read: a deleted message keeps its place with an empty body.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Message {
    pub id: i64,
    pub chat_id: i64,
    pub user_id: i64,
    pub body: String,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted_at: Option<String>,
    /// Set only on a message from outside the company (an inbound webhook), whose `user_id`
    /// is [`EXTERNAL_USER_ID`]; absent from the JSON of every other message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_author: Option<ExternalAuthor>,
    /// Its attachments; absent from the JSON of a message without any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<super::files::FileInfo>,
}

/// `user_id` of a message from outside the company: no catalog user has it (theirs start at 1),
/// so nobody can edit or delete it as their own.
pub const EXTERNAL_USER_ID: i64 = 0;
pub const MAX_AUTHOR_CHARS: usize = 200;

/// Who wrote a message from outside the company, as the sender names them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalAuthor {
    pub name: String,
    /// The sender's own id for that person, kept for the sender's sake; never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Input of [`create_chat`]. `kind` is text so that a bad value is reported
/// with the other fields.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewChat {
    pub title: String,
    pub kind: String,
    /// Others to add; the creator is added anyway (listing them is harmless).
    #[serde(default)]
    pub participant_ids: Vec<i64>,
}

/// Input of [`update_chat`]; absent fields are left alone.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChatUpdate {
    pub title: Option<String>,
    pub archived: Option<bool>,
}

const CHAT_COLUMNS: &str = "id, title, kind, created_by, created_at, updated_at, archived_at";
const MESSAGE_COLUMNS: &str =
    "id, chat_id, user_id, body, created_at, edited_at, deleted_at, external_author, external_author_id";

fn chat_from_row(row: &dyn RowRef) -> Result<Chat, StoreError> {
    let kind: String = row.get(2)?;
    Ok(Chat {
        id: row.get(0)?,
        title: row.get(1)?,
        // The CHECK constraint allows only these two.
        kind: ChatKind::parse(&kind).unwrap_or(ChatKind::Group),
        created_by: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        archived_at: row.get(6)?,
    })
}

fn message_from_row(row: &dyn RowRef) -> Result<Message, StoreError> {
    let deleted_at: Option<String> = row.get(6)?;
    Ok(Message {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        user_id: row.get(2)?,
        // The text stays in the file (soft delete) but never leaves it.
        body: if deleted_at.is_some() {
            String::new()
        } else {
            row.get(3)?
        },
        created_at: row.get(4)?,
        edited_at: row.get(5)?,
        deleted_at,
        external_author: match row.get::<Option<String>>(7)? {
            Some(name) => Some(ExternalAuthor {
                name,
                external_id: row.get(8)?,
            }),
            None => None,
        },
        files: Vec::new(),
    })
}

/// A chat the reader may see, and whether they take part in it.
struct Access {
    chat: Chat,
    /// `Some(last_read)` when the reader is a participant.
    membership: Option<Option<i64>>,
}

impl Access {
    fn participant(&self) -> bool {
        self.membership.is_some()
    }

    fn can_manage(&self, reader: &Reader) -> bool {
        reader.admin || (self.participant() && reader.can(MANAGE_PERMISSION))
    }

    fn require_manage(&self, reader: &Reader) -> Result<(), WorkspaceError> {
        if self.can_manage(reader) {
            Ok(())
        } else {
            Err(WorkspaceError::forbidden(MANAGE_PERMISSION))
        }
    }

    fn require_participant(&self) -> Result<(), WorkspaceError> {
        if self.participant() {
            Ok(())
        } else {
            Err(WorkspaceError::forbidden(PARTICIPANTS_ONLY))
        }
    }
}

fn sees_all(reader: &Reader) -> bool {
    reader.can("chats_view_all")
}

/// The chat if the reader may see it; `NotFound` whether it is missing or
/// hidden.
fn access(db: &dyn Sql, reader: &Reader, chat_id: i64) -> Result<Access, WorkspaceError> {
    let found = db.query_row(
        &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = ?1"),
        args![chat_id],
        chat_from_row,
    )?;
    let Some(chat) = found else {
        return Err(WorkspaceError::NotFound);
    };
    let membership: Option<Option<i64>> = db.query_row(
        "SELECT last_read_message_id FROM chat_participants
             WHERE chat_id = ?1 AND user_id = ?2",
        args![chat_id, reader.user_id],
        |row| row.get(0),
    )?;
    if membership.is_none() && !sees_all(reader) {
        return Err(WorkspaceError::NotFound);
    }
    Ok(Access { chat, membership })
}

fn summary(db: &dyn Sql, reader: &Reader, access: Access) -> Result<ChatSummary, StoreError> {
    let chat_id = access.chat.id;
    let participant_count: i64 = db.query_one(
        "SELECT count(*) FROM chat_participants WHERE chat_id = ?1",
        args![chat_id],
        |row| row.get(0),
    )?;
    let unread_count = match access.membership {
        None => 0,
        Some(last_read) => db.query_one(
            "SELECT count(*) FROM messages
             WHERE chat_id = ?1 AND id > ?2 AND user_id <> ?3 AND deleted_at IS NULL",
            args![chat_id, last_read.unwrap_or(0), reader.user_id],
            |row| row.get(0),
        )?,
    };
    let last_message = db.query_row(
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE chat_id = ?1 AND deleted_at IS NULL ORDER BY id DESC LIMIT 1"
        ),
        args![chat_id],
        message_from_row,
    )?;
    Ok(ChatSummary {
        participant: access.membership.is_some(),
        chat: access.chat,
        participant_count,
        unread_count,
        last_message,
    })
}

/// The chats the reader sees (archived ones included, marked by
/// `archived_at`), most recently active first: by the last message, or the
/// creation of a chat without messages.
pub fn list_chats(tenant: &Tenant, reader: &Reader) -> Result<Vec<ChatSummary>, WorkspaceError> {
    tenant.read(|db| {
        // Overseers scan every chat; others start from their own participations
        // (the by-user index) rather than filtering a scan.
        let join = if sees_all(reader) {
            "LEFT JOIN"
        } else {
            "JOIN"
        };
        let rows = db.query_map(
            &format!(
            "SELECT c.id, c.title, c.kind, c.created_by, c.created_at, c.updated_at, c.archived_at,
                    p.user_id IS NOT NULL, p.last_read_message_id
             FROM chats c
             {join} chat_participants p ON p.chat_id = c.id AND p.user_id = ?1"
        ),
            args![reader.user_id],
            |row| {
                let chat = chat_from_row(row)?;
                let participant: bool = row.get(7)?;
                let last_read: Option<i64> = row.get(8)?;
                Ok(Access {
                    chat,
                    membership: participant.then_some(last_read),
                })
            },
        )?;
        let mut out = Vec::new();
        for access in rows {
            out.push(summary(db, reader, access)?);
        }
        out.sort_by(|a, b| {
            let active = |s: &ChatSummary| {
                s.last_message
                    .as_ref()
                    .map_or(&s.chat.created_at, |m| &m.created_at)
                    .clone()
            };
            (active(b), b.chat.id).cmp(&(active(a), a.chat.id))
        });
        Ok(out)
    })
}

pub fn get_chat(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
) -> Result<ChatSummary, WorkspaceError> {
    tenant.read(|db| {
        let access = access(db, reader, chat_id)?;
        Ok(summary(db, reader, access)?)
    })
}

/// Creates a chat with the reader and `participant_ids` as participants.
/// Needs `chats_create`; every named user must be a member of the tenant.
pub fn create_chat(
    tenant: &Tenant,
    reader: &Reader,
    new: &NewChat,
    is_member: &dyn Fn(i64) -> bool,
) -> Result<ChatSummary, WorkspaceError> {
    if !reader.can("chats_create") {
        return Err(WorkspaceError::forbidden("chats_create"));
    }
    let mut problems = Problems::default();
    let title = problems.text("title", &new.title, MAX_TITLE_CHARS);
    let kind = ChatKind::parse(&new.kind);
    if kind.is_none() {
        problems.add("kind", "must be direct or group");
    }
    let others: BTreeSet<i64> = new
        .participant_ids
        .iter()
        .copied()
        .filter(|&id| id != reader.user_id)
        .collect();
    if new.participant_ids.len() > MAX_INITIAL_PARTICIPANTS {
        problems.add(
            "participant_ids",
            format!("at most {MAX_INITIAL_PARTICIPANTS} participants"),
        );
    } else {
        let strangers: Vec<String> = others
            .iter()
            .filter(|&&id| !is_member(id))
            .map(i64::to_string)
            .collect();
        if !strangers.is_empty() {
            problems.add(
                "participant_ids",
                format!("not members of this tenant: {}", strangers.join(", ")),
            );
        } else if kind == Some(ChatKind::Direct) && others.len() != 1 {
            problems.add(
                "participant_ids",
                "a direct chat has exactly one other participant",
            );
        }
    }
    problems.check()?;
    let kind = kind.unwrap_or(ChatKind::Group);

    tenant.write_sql(|db| {
        reader
            .limits
            .check(db, "chats", "SELECT count(*) FROM chats")?;
        let now = now();
        let chat_id: i64 = db.query_one(
            "INSERT INTO chats (title, kind, created_by, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
            args![&title, kind.as_str(), reader.user_id, &now],
            |row| row.get(0),
        )?;
        for user_id in std::iter::once(reader.user_id).chain(others.iter().copied()) {
            db.execute(
                "INSERT INTO chat_participants (chat_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
                args![chat_id, user_id, &now],
            )?;
        }
        let access = access(db, reader, chat_id)?;
        Ok(summary(db, reader, access)?)
    })
}

/// Renames and/or (un)archives a chat; see the module notes for who may.
pub fn update_chat(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    update: &ChatUpdate,
) -> Result<ChatSummary, WorkspaceError> {
    tenant.write_sql(|db| {
        let found = access(db, reader, chat_id)?;
        found.require_manage(reader)?;
        let mut problems = Problems::default();
        let title = update
            .title
            .as_deref()
            .map(|t| problems.text("title", t, MAX_TITLE_CHARS));
        problems.check()?;

        let mut chat = found.chat.clone();
        let mut changed = false;
        if let Some(title) = title.filter(|t| *t != chat.title) {
            chat.title = title;
            changed = true;
        }
        let now = now();
        match update.archived {
            Some(true) if chat.archived_at.is_none() => {
                chat.archived_at = Some(now.clone());
                changed = true;
            }
            Some(false) if chat.archived_at.is_some() => {
                chat.archived_at = None;
                changed = true;
            }
            _ => {}
        }
        if changed {
            let db: &dyn Sql = db;
            db.execute(
                "UPDATE chats SET title = ?2, archived_at = ?3, updated_at = ?4 WHERE id = ?1",
                args![chat_id, &chat.title, chat.archived_at.as_deref(), &now],
            )?;
        }
        let access = access(db, reader, chat_id)?;
        Ok(summary(db, reader, access)?)
    })
}

/// Adds a member of the tenant to a group chat; adding a participant again
/// changes nothing. Managers only (an admin may add themselves).
pub fn add_participant(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    user_id: i64,
    is_member: &dyn Fn(i64) -> bool,
) -> Result<Participant, WorkspaceError> {
    // Asked before the write lock is taken; reported only once the reader is
    // known to see and manage the chat.
    let member = is_member(user_id);
    tenant.write_sql(|db| {
        let found = access(db, reader, chat_id)?;
        found.require_manage(reader)?;
        let mut problems = Problems::default();
        if !member {
            problems.add("user_id", "not a member of this tenant");
        }
        let present = participant(db, chat_id, user_id)?;
        if found.chat.kind == ChatKind::Direct && present.is_none() {
            problems.add("chat_id", "a direct chat takes no further participants");
        }
        problems.check()?;
        if let Some(p) = present {
            return Ok(p);
        }
        db.execute(
            "INSERT INTO chat_participants (chat_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
            args![chat_id, user_id, now()],
        )?;
        participant(db, chat_id, user_id)?.ok_or(WorkspaceError::NotFound)
    })
}

/// Removes a participant: managers remove anyone, everyone removes
/// themselves. Someone who does not take part is `NotFound`.
pub fn remove_participant(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    user_id: i64,
) -> Result<(), WorkspaceError> {
    tenant.write_sql(|db| {
        let found = access(db, reader, chat_id)?;
        if user_id != reader.user_id {
            found.require_manage(reader)?;
        }
        let removed = db.execute(
            "DELETE FROM chat_participants WHERE chat_id = ?1 AND user_id = ?2",
            args![chat_id, user_id],
        )?;
        if removed.rows == 0 {
            return Err(WorkspaceError::NotFound);
        }
        Ok(())
    })
}

/// The participants of a chat the reader sees, in order of joining.
pub fn participants(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
) -> Result<Vec<Participant>, WorkspaceError> {
    tenant.read(|db| {
        access(db, reader, chat_id)?;
        Ok(db.query_map(
            "SELECT user_id, joined_at, last_read_message_id FROM chat_participants
         WHERE chat_id = ?1 ORDER BY joined_at, user_id",
            args![chat_id],
            participant_from_row,
        )?)
    })
}

fn participant_from_row(row: &dyn RowRef) -> Result<Participant, StoreError> {
    Ok(Participant {
        user_id: row.get(0)?,
        joined_at: row.get(1)?,
        last_read_message_id: row.get(2)?,
    })
}

fn participant(
    db: &dyn Sql,
    chat_id: i64,
    user_id: i64,
) -> Result<Option<Participant>, StoreError> {
    db.query_row(
        "SELECT user_id, joined_at, last_read_message_id FROM chat_participants
         WHERE chat_id = ?1 AND user_id = ?2",
        args![chat_id, user_id],
        participant_from_row,
    )
}

/// Messages of a chat the reader sees, newest first: `before` is the `next`
/// of the previous page (a message id, exclusive). Ids only grow, so a page
/// never repeats or skips a message, whatever is posted meanwhile.
pub fn list_messages(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    before: Option<i64>,
    limit: Option<u32>,
) -> Result<Page<Message, i64>, WorkspaceError> {
    let mut problems = Problems::default();
    let limit = problems.limit(limit);
    problems.check()?;
    tenant.read(|db| {
        access(db, reader, chat_id)?;
        // The checked limit as a literal: a bound LIMIT makes SQLite re-prepare the statement at
        // every new binding (see `orders::list_orders`).
        let fetch = i64::from(limit) + 1;
        let mut items = db.query_map(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE chat_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT {fetch}"
            ),
            args![chat_id, before.unwrap_or(i64::MAX)],
            message_from_row,
        )?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|m| m.id)
        } else {
            None
        };
        super::files::fill_message_files(db, &mut items)?;
        Ok(Page { items, next })
    })
}

fn body_problems(problems: &mut Problems, body: &str) {
    if body.trim().is_empty() {
        problems.add("body", "must not be empty");
    } else if !problems.control_characters("body", body, true) {
        // Reported. A NUL in particular: SQLite's length() stops at one, so the
        // table's CHECK would refuse a body starting with one (a database
        // error, not a 422) and misjudge the length of others.
    } else if body.chars().count() > MAX_BODY_CHARS {
        problems.add(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        );
    }
}

fn archived_problem(problems: &mut Problems, chat: &Chat) {
    if chat.archived_at.is_some() {
        problems.add("chat_id", "the chat is archived");
    }
}

fn message(db: &dyn Sql, chat_id: i64, message_id: i64) -> Result<Option<Message>, StoreError> {
    db.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND chat_id = ?2"),
        args![message_id, chat_id],
        message_from_row,
    )
}

/// Posts a message (1..=10,000 characters, not blank) as the reader, who must
/// take part in the chat.
pub fn post_message(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    body: &str,
) -> Result<Message, WorkspaceError> {
    tenant.write_sql(|db| insert_message(db, reader, chat_id, body))
}

/// [`post_message`] inside the caller's write (a message that carries a file adds it there).
pub(super) fn insert_message(
    db: &dyn Sql,
    reader: &Reader,
    chat_id: i64,
    body: &str,
) -> Result<Message, WorkspaceError> {
    let found = access(db, reader, chat_id)?;
    found.require_participant()?;
    let mut problems = Problems::default();
    archived_problem(&mut problems, &found.chat);
    body_problems(&mut problems, body);
    problems.check()?;
    let now = now();
    reader
        .limits
        .check_counted("messages_per_day", |limit| messages_today(db, &now, limit))?;
    let id: i64 = db.query_one(
        "INSERT INTO messages (chat_id, user_id, body, created_at)
         VALUES (?1, ?2, ?3, ?4) RETURNING id",
        args![chat_id, reader.user_id, body, &now],
        |row| row.get(0),
    )?;
    message(db, chat_id, id)?.ok_or(WorkspaceError::NotFound)
}

/// Whether the reader may post in the chat: `NotFound` if they cannot see it, `Forbidden` if
/// they do not take part.
pub(super) fn check_participant(
    conn: &dyn Sql,
    reader: &Reader,
    chat_id: i64,
) -> Result<(), WorkspaceError> {
    access(conn, reader, chat_id)?.require_participant()
}

/// Whether the reader may see the chat (`NotFound` if not).
pub(super) fn check_access(
    conn: &dyn Sql,
    reader: &Reader,
    chat_id: i64,
) -> Result<(), WorkspaceError> {
    access(conn, reader, chat_id).map(|_| ())
}

/// Messages posted since midnight UTC of `now`, counted up to `limit`: only the newest
/// `limit` by id are read (ids grow with time), so the count costs no more than the limit.
fn messages_today(db: &dyn Sql, now: &str, limit: i64) -> Result<i64, StoreError> {
    let midnight = format!("{}T00:00:00.000Z", &now[..10]);
    db.query_one(
        "SELECT count(*) FROM (SELECT created_at FROM messages ORDER BY id DESC LIMIT ?1)
         WHERE created_at >= ?2",
        args![limit, midnight],
        |r| r.get(0),
    )
}

/// What is wrong with a message from outside, every field at once (the API checks it before it
/// accepts the delivery, [`post_external_message`] again).
pub fn external_message_problems(
    body: &str,
    author: &ExternalAuthor,
) -> Result<(), WorkspaceError> {
    let mut problems = Problems::default();
    body_problems(&mut problems, body);
    let name = author.name.trim();
    if name.is_empty() {
        problems.add("author.name", "must not be empty");
    } else if problems.control_characters("author.name", name, false)
        && name.chars().count() > MAX_AUTHOR_CHARS
    {
        problems.add(
            "author.name",
            format!("must be at most {MAX_AUTHOR_CHARS} characters"),
        );
    }
    if let Some(id) = &author.external_id {
        if id.is_empty() || id.chars().count() > MAX_AUTHOR_CHARS {
            problems.add(
                "author.external_id",
                format!("must be 1 to {MAX_AUTHOR_CHARS} characters"),
            );
        } else {
            problems.control_characters("author.external_id", id, false);
        }
    }
    problems.check()
}

/// Posts a message from outside the company (an inbound webhook) into a chat, as `author`, with
/// no reader: the delivery was verified and names its tenant, and every chat of the tenant is
/// open to it. `key` names the delivery (source and webhook-id): a second call with the same
/// key posts nothing and answers `None`. A missing chat is `NotFound`, an archived one a
/// validation error.
pub fn post_external_message(
    tenant: &Tenant,
    chat_id: i64,
    body: &str,
    author: &ExternalAuthor,
    key: &str,
) -> Result<Option<Message>, WorkspaceError> {
    external_message_problems(body, author)?;
    tenant.write_sql(|db| {
        let chat = db
            .query_row(
                &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = ?1"),
                args![chat_id],
                chat_from_row,
            )?
            .ok_or(WorkspaceError::NotFound)?;
        let mut problems = Problems::default();
        archived_problem(&mut problems, &chat);
        problems.check()?;
        let id: Option<i64> = db.query_row(
            "INSERT INTO messages (chat_id, user_id, body, created_at,
                                   external_author, external_author_id, inbound_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (inbound_key) WHERE inbound_key IS NOT NULL DO NOTHING
             RETURNING id",
            args![
                chat_id,
                EXTERNAL_USER_ID,
                body,
                now(),
                author.name.trim(),
                author.external_id.as_deref(),
                key
            ],
            |row| row.get(0),
        )?;
        match id {
            Some(id) => Ok(message(db, chat_id, id)?),
            None => Ok(None),
        }
    })
}

/// The reader's own, not deleted message in a chat they see.
fn own_message(
    conn: &dyn Sql,
    reader: &Reader,
    chat_id: i64,
    message_id: i64,
) -> Result<(Access, Message), WorkspaceError> {
    let found = access(conn, reader, chat_id)?;
    let msg = message(conn, chat_id, message_id)?
        .filter(|m| m.deleted_at.is_none())
        .ok_or(WorkspaceError::NotFound)?;
    if msg.user_id != reader.user_id {
        return Err(WorkspaceError::forbidden(OWN_MESSAGES_ONLY));
    }
    Ok((found, msg))
}

/// Replaces the body of the reader's own message.
pub fn edit_message(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    message_id: i64,
    body: &str,
) -> Result<Message, WorkspaceError> {
    tenant.write_sql(|db| {
        let (found, msg) = own_message(db, reader, chat_id, message_id)?;
        let mut problems = Problems::default();
        archived_problem(&mut problems, &found.chat);
        body_problems(&mut problems, body);
        problems.check()?;
        if msg.body != body {
            let db: &dyn Sql = db;
            db.execute(
                "UPDATE messages SET body = ?2, edited_at = ?3 WHERE id = ?1",
                args![message_id, body, now()],
            )?;
        }
        message(db, chat_id, message_id)?.ok_or(WorkspaceError::NotFound)
    })
}

/// Soft-deletes the reader's own message: it keeps its place in the chat
/// with an empty body. A deleted message is `NotFound` to edit or delete.
pub fn delete_message(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    message_id: i64,
) -> Result<(), WorkspaceError> {
    // The text stays (soft delete), its files go: nothing shows them any more.
    let mut trash = super::files::Trash::new(tenant);
    let result = tenant.write_sql(|db| {
        let (found, _) = own_message(db, reader, chat_id, message_id)?;
        let mut problems = Problems::default();
        archived_problem(&mut problems, &found.chat);
        problems.check()?;
        db.execute(
            "UPDATE messages SET deleted_at = ?2 WHERE id = ?1",
            args![message_id, now()],
        )?;
        let hashes = super::files::hashes_of(db, Some(message_id), None)?;
        db.execute("DELETE FROM files WHERE message_id = ?1", args![message_id])?;
        trash.release(db, &hashes)
    });
    trash.settle(result.is_ok());
    result
}

/// Marks everything up to `message_id` (a message of this chat) as read by
/// the reader. Never moves backwards: returns the resulting mark.
pub fn mark_read(
    tenant: &Tenant,
    reader: &Reader,
    chat_id: i64,
    message_id: i64,
) -> Result<i64, WorkspaceError> {
    tenant.write_sql(|db| {
        let found = access(db, reader, chat_id)?;
        found.require_participant()?;
        if message(db, chat_id, message_id)?.is_none() {
            return Err(WorkspaceError::NotFound);
        }
        let mark: i64 = db.query_one(
            "UPDATE chat_participants
             SET last_read_message_id = max(coalesce(last_read_message_id, 0), ?3)
             WHERE chat_id = ?1 AND user_id = ?2
             RETURNING last_read_message_id",
            args![chat_id, reader.user_id, message_id],
            |row| row.get(0),
        )?;
        Ok(mark)
    })
}
