//! What an accepted inbound delivery does once its job runs: the message appears in the chat,
//! from its external author, and live on the chat's channel; a replay posts nothing more; a
//! chat that does not exist fails the job, saying so.

use std::time::Duration;

use tenantd::api::jobs;
use tenantd::catalog::JobStatus;

use crate::support::{eventually, expect, frame_data, int, text};
use crate::webhooks_in::hooks;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_delivered_message_appears_in_the_chat_and_live_on_its_channel_once() {
    let h = hooks();
    let app = &h.app;
    jobs::start_workers(&app.app);
    let owner = app.owner_token.clone();
    // The owner created the chat, so takes part in it.
    let channel = format!("private-company.{}.chat.{}", h.acme, h.chat);
    let mut ws = app.ws();
    app.join_channel(&mut ws, &owner, &channel);

    let body = h.message(&h.acme, "hello <b>from</b> outside");
    let reply = h.send(&h.acme_secret, "msg_live", h.now(), &body);
    expect(&reply, 202, "accepted");
    let job = int(&reply.json()["job"]);

    let event = ws.recv_event("message.created", Some(&channel));
    let message = frame_data(&event)["message"].clone();
    assert_eq!(message["body"], "hello <b>from</b> outside");
    assert_eq!(message["user_id"], 0);
    assert_eq!(message["chat_id"], h.chat);
    assert_eq!(message["external_author"]["name"], "Eve Bridge");
    assert_eq!(message["external_author"]["external_id"], "tg:42");
    assert!(eventually(WAIT, || {
        app.app.catalog.job(job).unwrap().unwrap().status == JobStatus::Done
    }));

    // The sender retries after the job is done: the same job, nothing new in the chat.
    let again = h.send(&h.acme_secret, "msg_live", h.now(), &body);
    expect(&again, 202, "a replay");
    assert_eq!(int(&again.json()["job"]), job);
    let path = format!("/api/chats/{}/messages", h.chat);
    let list = app.on(&owner, "acme", "GET", &path, None);
    expect(&list, 200, "the chat's messages");
    let messages = list.json()["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0], message);
    assert_eq!(h.jobs().len(), 1);
    // Nothing reached globex's file.
    let theirs = rusqlite::Connection::open(app.tenant_file(&h.globex)).unwrap();
    let count: i64 = theirs
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0);
}

#[test]
fn a_delivery_for_a_missing_chat_fails_its_job_with_a_clear_error() {
    let h = hooks();
    jobs::start_workers(&h.app.app);
    let body = serde_json::json!({
        "tenantId": h.acme,
        "chatId": 999_999,
        "body": "anyone?",
        "author": {"name": "Eve"},
    })
    .to_string();
    let reply = h.send(&h.acme_secret, "msg_lost", h.now(), &body);
    expect(&reply, 202, "accepted: the chat is checked by the job");
    let job = int(&reply.json()["job"]);
    assert!(eventually(WAIT, || {
        h.app.app.catalog.job(job).unwrap().unwrap().status == JobStatus::Failed
    }));
    let record = h.app.app.catalog.job(job).unwrap().unwrap();
    assert_eq!(record.attempts, 1, "a missing chat is not retried");
    assert!(
        text(&serde_json::json!(record.last_error)).contains("chat 999999 does not exist"),
        "{:?}",
        record.last_error
    );
}
