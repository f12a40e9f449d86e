//! Request bodies: a missing or wrongly typed field is a 422 naming that field, whichever route
//! reads it; malformed JSON stays a 400.

use serde_json::{json, Value};

use crate::support::{spawn_app, Reply};

fn fields(reply: &Reply) -> Vec<String> {
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (422, "validation_failed"),
        "{}",
        reply.text()
    );
    let body = reply.json();
    body["error"]["fields"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_wrongly_typed_field_is_reported_under_its_own_name() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let order = |changes: Value| {
        let mut body = json!({
            "title": "t", "customer_name": "Ada", "customer_email": "ada@example.com",
            "amount_minor": 100, "currency": "EUR",
        });
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.on(&owner, "acme", "POST", "/api/orders", Some(body))
    };
    assert_eq!(
        fields(&order(json!({"amount_minor": "100"}))),
        ["amount_minor"]
    );
    assert_eq!(fields(&order(json!({"title": 7}))), ["title"]);
    let chat = app.on(
        &owner,
        "acme",
        "POST",
        "/api/chats",
        Some(json!({"title": "t", "kind": "group", "participant_ids": ["1"]})),
    );
    assert_eq!(fields(&chat), ["participant_ids"]);
    let tenant = app.admin(
        "POST",
        "/api/admin/tenants",
        Some(json!({"slug": "globex", "name": "Globex", "domains": [1]})),
    );
    assert_eq!(fields(&tenant), ["domains"]);
    let missing = app.admin(
        "POST",
        "/api/admin/tenants",
        Some(json!({"name": "Globex"})),
    );
    assert_eq!(fields(&missing), ["slug"]);
    assert_eq!(missing.json()["error"]["fields"]["slug"], "is required");
    let wrong = app.call(
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": "a@example.com", "password": 1}).to_string()),
    );
    assert_eq!(fields(&wrong), ["password"]);
    assert_eq!(
        wrong.json()["error"]["fields"]["password"],
        "must be a string"
    );
}
