//! `PATCH /api/me` and the photo: an absent field leaves it alone, `null` removes it, and the
//! older name `photo` still works the same way.

use serde_json::{json, Value};

use crate::support::spawn_app;

#[test]
fn an_absent_photo_is_kept_and_a_null_one_removed() {
    let app = spawn_app();
    app.user("pia@example.test", "pia-password-1");
    let token = app.token("pia@example.test", "pia-password-1");
    let patch = |body: Value| {
        let reply = app.as_bearer(&token, "PATCH", "/api/me", &[], Some(body));
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["user"]["photo_url"].clone()
    };
    let a = "https://img.example.test/a.png";
    let b = "https://img.example.test/b.png";
    assert_eq!(patch(json!({"photo_url": a})), a);
    assert_eq!(
        patch(json!({"name": "Pia"})),
        a,
        "an absent photo is unchanged"
    );
    assert_eq!(patch(json!({"photo_url": null})), Value::Null);
    assert_eq!(patch(json!({"photo": b})), b);
    assert_eq!(patch(json!({"surname": "Lind"})), b);
    assert_eq!(patch(json!({"photo": null})), Value::Null);
}
