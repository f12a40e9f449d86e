//! Limits on company exports: one streamed archive per company and a few on the server, so one
//! company's slow downloads cannot keep the others' out; a stream past its allowed duration is
//! cut and ends its read.

use crate::export::{app_for_streams, big_company, stalled_export};
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
    let auth = format!("Bearer {}", app.owner_token);
    let mut client = app.server.connect();
    client.send(
        raw_request(
            "GET",
            "/t/acmex/api/export",
            &[("Authorization", auth.as_str())],
            None,
        )
        .as_bytes(),
    );
    assert_eq!(client.head().status, 200);
    assert!(client.is_closed(), "the stream went on past its deadline");
    assert!(
        eventually(std::time::Duration::from_secs(60), || app
            .app
            .registry
            .evict(&acme)
            .is_ok()),
        "the cut stream still holds the company"
    );
    let mut next = app.server.connect();
    next.send(
        raw_request(
            "GET",
            "/t/acmex/api/export",
            &[("Authorization", auth.as_str())],
            None,
        )
        .as_bytes(),
    );
    assert_eq!(
        next.head().status,
        200,
        "the company's place was given back"
    );
}
