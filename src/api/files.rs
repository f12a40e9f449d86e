//! Files over HTTP: uploads to an order (`POST /api/orders/{id}/files`) or into a chat as a
//! message (`POST /api/chats/{id}/files`), read as they arrive; the files of an order; a file's
//! details, its download (ranges, `Content-Disposition: attachment`, `nosniff`) and its removal
//! (`/api/files/{id}`). Who may do what is `workspace::files`'s to say.
//!
//! An upload's body is the file's bytes (no multipart), its type the `Content-Type`, its name
//! the `name` query parameter. The plan's `file_size_mb` is checked against `Content-Length`
//! before a byte is accepted and again as the bytes come; `storage_mb` when the file is added.

use serde_json::json;

use crate::error::Error;
use crate::http::{self, Request, Response, Router};
use crate::workspace::files::{self, FileInfo, ReceiveError, Upload};

use super::webhooks_out::emit;
use super::workspace::{message_created, reader_of, writer};
use super::{id_param, App, Member, RequestCtx, Route};

/// The largest upload the server takes whatever the plan (the plan's `file_size_mb` may be
/// lower): 2 GiB.
pub const MAX_UPLOAD: u64 = 2 << 30;

pub(super) fn routes(r: &mut Router<Route>) {
    r.add(
        "POST",
        "/api/orders/{id}/files",
        Route::Tenant(upload_to_order),
    )
    .streamed_body(MAX_UPLOAD);
    r.add(
        "GET",
        "/api/orders/{id}/files",
        Route::TenantRead(order_files),
    );
    r.add(
        "POST",
        "/api/chats/{id}/files",
        Route::Tenant(upload_to_chat),
    )
    .streamed_body(MAX_UPLOAD);
    r.add("GET", "/api/files/{id}", Route::Tenant(show));
    r.add("GET", "/api/files/{id}/download", Route::Tenant(download));
    r.add("DELETE", "/api/files/{id}", Route::Tenant(delete));
}

/// Receives the request's body into the tenant's files, within the plan's file size.
fn receive(
    ctx: &RequestCtx,
    member: &Member,
    limits: &crate::workspace::Limits,
) -> Result<Upload, Error> {
    let max_mib = limits.0.get("file_size_mb").copied();
    let max = max_mib.map_or(MAX_UPLOAD, |mib| {
        (mib.max(0) as u64).saturating_mul(1 << 20).min(MAX_UPLOAD)
    });
    let too_large = || match max_mib {
        Some(mib) => Error::PayloadTooLarge(format!("the plan allows files of at most {mib} MiB")),
        None => Error::PayloadTooLarge(format!("files may be at most {} MiB", MAX_UPLOAD >> 20)),
    };
    // No stream: the request had no body at all (an empty file), which the server hands over
    // without asking the route how it takes one.
    let received = match ctx.req.body_stream.as_ref() {
        Some(body) => {
            // Refused before the client sends the bytes (it may have asked for 100 Continue).
            if body.declared_length().is_some_and(|n| n > max) {
                return Err(too_large());
            }
            files::receive(&member.tenant, body, max)
        }
        None => files::receive(&member.tenant, std::io::empty(), max),
    };
    received.map_err(|e| match e {
        ReceiveError::TooLarge { .. } => too_large(),
        ReceiveError::Body(e) => match http::body_error(&e) {
            Some(reject) => Error::Body(reject.clone()),
            None => Error::Internal(format!("reading an upload: {e}")),
        },
        ReceiveError::Disk(e) => Error::Internal(format!("storing an upload: {e}")),
    })
}

fn described(req: &Request) -> Result<files::Described, Error> {
    let name = req
        .query_param("name")
        .ok_or_else(|| Error::validation("name", "the file's name is required (?name=...)"))?;
    Ok(files::describe(&name, req.header("content-type"))?)
}

fn upload_to_order(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let writer = writer(app, member)?;
    files::may_attach_to_order(&member.tenant, &writer, id)?;
    let what = described(ctx.req)?;
    let upload = receive(ctx, member, &writer.limits)?;
    let file = files::attach_to_order(&member.tenant, &writer, id, &upload, &what)?;
    emit(
        app,
        &member.tenant,
        "order.file_added",
        || json!({ "order_id": id, "file": file }),
    );
    Ok(Response::json(201, &file))
}

fn upload_to_chat(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let writer = writer(app, member)?;
    files::may_post_file(&member.tenant, &writer, id)?;
    let what = described(ctx.req)?;
    let caption = ctx.req.query_param("caption");
    let upload = receive(ctx, member, &writer.limits)?;
    let message = files::post_file_message(
        &member.tenant,
        &writer,
        id,
        caption.as_deref(),
        &upload,
        &what,
    )?;
    Ok(message_created(app, ctx, member, id, &message))
}

fn order_files(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let reader = reader_of(member.user.id, member.membership);
    let files = files::order_files(&member.tenant, &reader, id)?;
    Ok(Response::json(200, &json!({ "files": files })))
}

fn found(ctx: &RequestCtx, member: &Member) -> Result<FileInfo, Error> {
    let id = id_param(ctx.params, "id")?;
    let reader = reader_of(member.user.id, member.membership);
    Ok(files::get_file(&member.tenant, &reader, id)?)
}

fn show(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    Ok(Response::json(200, &found(ctx, member)?))
}

fn download(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let file = found(ctx, member)?;
    let opened = files::blob_of(&member.tenant, &file).map(std::fs::File::open);
    let blob = match opened {
        Some(Ok(f)) => f,
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Internal(format!("file {}: {e}", file.id)))
        }
        _ => {
            // Deleted between the read of its row and the open: gone, as for anyone else.
            if matches!(found(ctx, member), Err(Error::NotFound)) {
                return Err(Error::NotFound);
            }
            return Err(Error::Internal(format!(
                "file {} of tenant {}: its content {} is missing",
                file.id,
                member.tenant.slug(),
                file.sha256
            )));
        }
    };
    let size = file.size as u64;
    let etag = format!("\"{}\"", file.sha256);
    let common = |r: Response| {
        r.with_header("ETag", etag.clone())
            .with_header("Accept-Ranges", "bytes")
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Content-Disposition", disposition(&file.name))
            // Never run as a page of ours, whatever its type says.
            .with_header("Content-Security-Policy", "sandbox; default-src 'none'")
            .with_header("Cache-Control", "private, no-cache")
    };
    if ctx
        .req
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(common(Response::new(304, "text/plain", Vec::new())));
    }
    // A range only while the file is the one the client has (If-Range), as RFC 9110 14.2 says.
    let range_applies = ctx.req.header("if-range").is_none_or(|v| v.trim() == etag);
    let range = match ctx.req.header("range") {
        Some(value) if range_applies => parse_range(value, size),
        _ => Range::Whole,
    };
    let content_type = file.content_type.clone();
    Ok(match range {
        Range::Whole => common(Response::file(200, content_type, blob, 0, size)),
        Range::Part(start, end) => common(
            Response::file(206, content_type, blob, start, end - start + 1)
                .with_header("Content-Range", format!("bytes {start}-{end}/{size}")),
        ),
        Range::Unsatisfiable => common(
            Response::error(
                416,
                "range_not_satisfiable",
                "the range is outside the file",
            )
            .with_header("Content-Range", format!("bytes */{size}")),
        ),
    })
}

fn delete(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    // A write like any other: not while the subscription leaves the tenant read-only.
    files::delete_file(&member.tenant, &writer(app, member)?, id)?;
    Ok(Response::json(200, &json!({ "deleted": id })))
}

/// `attachment`, with the name as plain ASCII (quotes and backslashes replaced) and, for any
/// other name, as UTF-8 too (RFC 6266, RFC 8187).
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, other units or a malformed value
/// get the whole file, which RFC 9110 allows a server to send instead.
fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => Range::Unsatisfiable,
            Some(_) if size == 0 => Range::Unsatisfiable,
            Some(n) => Range::Part(size.saturating_sub(n), size - 1),
            None => Range::Whole,
        },
        (a, b) => match (
            num(a),
            if b.is_empty() {
                Some(None)
            } else {
                num(b).map(Some)
            },
        ) {
            (Some(start), Some(end)) => {
                if start >= size {
                    return Range::Unsatisfiable;
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                if end < start {
                    Range::Whole
                } else {
                    Range::Part(start, end)
                }
            }
            _ => Range::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), Range::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Range::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=x-1", 100), Range::Whole);
    }

    #[test]
    fn the_disposition_carries_any_name_safely() {
        assert_eq!(
            disposition("a b.pdf"),
            "attachment; filename=\"a b.pdf\"; filename*=UTF-8''a%20b.pdf"
        );
        let d = disposition("\"x\\y\"\r\n.txt");
        assert!(!d.contains('\r') && !d.contains('\n'), "{d}");
        assert!(d.starts_with("attachment; filename=\"_x_y___.txt\""), "{d}");
        assert!(disposition("ünï.txt").ends_with("UTF-8''%C3%BCn%C3%AF.txt"));
    }
}
