//! Limits on company exports: one streamed archive per company and a few on the server, so one
//! company's slow downloads cannot keep the others' out; a stream past its allowed duration is
//! cut and ends its read.

use tenantd::api::jobs;

use crate::export::{app_for_streams, big_company, let_go, run_jobs, send_export, stalled_export};
use crate::support::*;

/// A company streams one archive at a time: its second is 429 while another company's export
/// still starts; the server's cap (2) then refuses a third company.
#[test]
fn one_company_cannot_take_every_export_stream() {
    let app = app_for_streams();
    big_company(&app, "acmex");
    big_company(&app, "globexq");
    app.create_tenant("initechz", &[]);
    let _slow = stalled_export(&app, "acmex");
    let again = app.get("/t/acmex/api/export", &[]);
    expect_error(&again, 429, "too_many_requests", "acme's second stream");
    let _other = stalled_export(&app, "globexq");
    let third = app.get("/t/initechz/api/export", &[]);
    expect_error(&third, 429, "too_many_requests", "past the server's cap");
}

/// A stream past its allowed duration (none at all here) is cut before its body: the client sees
/// the head and then the close, the company's file is no longer held, and its next export may
/// start.
#[test]
fn a_stream_past_its_duration_is_cut_and_ends_its_read() {
    let app = spawn_app_with(|config| {
        config.exports.max_stream_duration = std::time::Duration::ZERO;
    });
    let acme = big_company(&app, "acmex");
    let mut client = app.server.connect();
    send_export(&mut client, "GET", "acmex", &app.owner_token);
    assert_eq!(client.head().status, 200);
    assert!(client.is_closed(), "the stream went on past its deadline");
    assert!(
        let_go(&app, &acme),
        "the cut stream still holds the company"
    );
    let mut next = app.server.connect();
    send_export(&mut next, "GET", "acmex", &app.owner_token);
    assert_eq!(
        next.head().status,
        200,
        "the company's place was given back"
    );
}

fn request(app: &TestApp, slug: &str) -> (u16, i64) {
    let reply = app.on(&app.owner_token, slug, "POST", "/api/exports", None);
    (reply.status, int(&reply.json()["id"]))
}

/// A company has one export job pending or running at a time (asking again answers it, 200),
/// on the `exports` queue that `default`'s workers never take; another company's request is its
/// own; only the newest archives are kept.
#[test]
fn export_jobs_are_one_at_a_time_on_their_own_queue_and_few_kept() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acmex", &[]));
    app.create_tenant("globexq", &[]);
    let (status, first) = request(&app, "acmex");
    assert_eq!(status, 202);
    assert_eq!(
        request(&app, "acmex"),
        (200, first),
        "a second request while pending"
    );
    let (status, globex) = request(&app, "globexq");
    assert!(status == 202 && globex != first, "globex's own export");
    let job = app.app.catalog.job(first).unwrap().unwrap();
    assert_eq!(job.queue, "exports");
    let mut runner = None;
    while jobs::run_next(
        &app.app,
        "default",
        "serve:test",
        &mut runner,
        jobs::now_ms(),
    )
    .unwrap()
    {}
    assert_eq!(
        app.app.catalog.job(first).unwrap().unwrap().status,
        tenantd::catalog::JobStatus::Pending,
        "a default worker took an export"
    );
    run_jobs(&app);

    let mut ids = vec![first];
    for _ in 0..5 {
        let (status, next) = request(&app, "acmex");
        assert_eq!(status, 202, "a new export once the last is done");
        run_jobs(&app);
        ids.push(next);
    }
    let dir = app.data.path().join("exports").join(&acme);
    let kept: Vec<bool> = ids
        .iter()
        .map(|id| dir.join(format!("{id}.zip")).exists())
        .collect();
    assert_eq!(kept, [false, true, true, true, true, true]);
    let listed = app
        .on(&app.owner_token, "acmex", "GET", "/api/exports", None)
        .json();
    let oldest = listed["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| int(&e["id"]) == first)
        .unwrap();
    assert_eq!(oldest["status"], "expired");
}

/// A client that reads nothing more while the I/O timeout is far away: the stream goes on only
/// until its deadline (a few seconds here), then is cut and lets the company go. (That a wait
/// for the client ends at the deadline is `http::server`'s own test.)
#[test]
fn a_stalled_stream_is_cut_at_its_deadline() {
    let app = spawn_app_full(
        |config| config.exports.max_stream_duration = std::time::Duration::from_secs(2),
        |http| http.io_timeout = std::time::Duration::from_secs(600),
    );
    let acme = big_company(&app, "acmex");
    let _slow = stalled_export(&app, "acmex");
    assert!(
        let_go(&app, &acme),
        "the stalled stream still holds the company"
    );
    let mut again = app.server.connect();
    send_export(&mut again, "HEAD", "acmex", &app.owner_token);
    assert_eq!(again.reply_to("HEAD").status, 200, "the company's place");
}
