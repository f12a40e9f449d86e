//! Being put in a chat reaches the person's own channel (`private-App.Models.User.<id>`), whether
//! at the chat's creation or later, so their list can show it without a reload; the creator and
//! people of other companies hear nothing.

use serde_json::json;

use crate::support::{frame_data, spawn_app};

fn user(id: i64) -> String {
    format!("private-App.Models.User.{id}")
}

#[test]
fn people_put_in_a_new_chat_are_notified_on_their_own_channel() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create_tenant("globex", &[]);
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (mike_id, mike) = app.member("mike@acme.test", "acme", "agent");
    let (ada_id, ada) = app.member("ada@acme.test", "acme", "agent");
    let (gus_id, gus) = app.member("gus@globex.test", "globex", "agent");
    let mut alices = app.ws();
    let mut mikes = app.ws();
    let mut adas = app.ws();
    let mut guses = app.ws();
    app.join_channel(&mut alices, &alice, &user(alice_id));
    app.join_channel(&mut mikes, &mike, &user(mike_id));
    app.join_channel(&mut adas, &ada, &user(ada_id));
    app.join_channel(&mut guses, &gus, &user(gus_id));

    // The creator names themselves too: they made it, they need no notice.
    let body = json!({"title": "launch", "kind": "group", "participant_ids": [mike_id, alice_id]});
    let created = app.on(&alice, "acme", "POST", "/api/chats", Some(body));
    assert_eq!(created.status, 201, "{}", created.text());
    let chat_id = created.json()["id"].as_i64().expect("chat id");
    let note = frame_data(&mikes.recv_event("notification", Some(&user(mike_id))));
    assert_eq!(
        note,
        json!({"type": "chat.added", "tenant_id": acme, "chat_id": chat_id})
    );
    alices.assert_nothing_pending();
    adas.assert_nothing_pending();

    // Added later: the same notice.
    let path = format!("/api/chats/{chat_id}/participants");
    let added = app.on(
        &alice,
        "acme",
        "POST",
        &path,
        Some(json!({"user_id": ada_id})),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    let note = frame_data(&adas.recv_event("notification", Some(&user(ada_id))));
    assert_eq!(
        (note["type"].as_str(), note["chat_id"].as_i64()),
        (Some("chat.added"), Some(chat_id))
    );

    // Naming someone of another company is refused, and they hear nothing of it.
    let body = json!({"title": "leak", "kind": "group", "participant_ids": [gus_id]});
    let refused = app.on(&alice, "acme", "POST", "/api/chats", Some(body));
    assert_eq!(refused.status, 422, "{}", refused.text());
    guses.assert_nothing_pending();
    mikes.assert_nothing_pending();
}
