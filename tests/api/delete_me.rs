//! Ending an account needs the person's own session: a personal token, which a script holds,
//! cannot do it even with the right password.

use serde_json::json;

use crate::support::*;

#[test]
fn a_personal_token_cannot_delete_the_account() {
    let app = spawn_app();
    app.create_tenant("acmex", &[]);
    let (pat, session) = app.member("pat@example.test", "acmex", "agent");
    let (_, personal) = app.personal_token(&session, "script", "acmex");
    let body = json!({"password": "member-password-1"});
    let reply = app.as_bearer(&personal, "DELETE", "/api/me", &[], Some(body.clone()));
    expect_error(&reply, 403, "session_required", "with a personal token");
    let disabled: i64 = app
        .central_db()
        .query_row("SELECT disabled FROM users WHERE id = ?1", [pat], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(disabled, 0, "the account was ended");
    expect(
        &app.as_bearer(&personal, "GET", "/api/me", &[], None),
        200,
        "the token still works",
    );
    let reply = app.as_bearer(&session, "DELETE", "/api/me", &[], Some(body));
    expect(&reply, 200, "with the session");
}
