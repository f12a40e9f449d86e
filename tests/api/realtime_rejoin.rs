//! Leaving a channel and joining it again at once, as a page does when one screen that listens
//! to a channel gives way to another that listens to the same one: the new authorization can
//! reach the hub before the unsubscribe frame sent ahead of it.

use serde_json::json;

use crate::support::spawn_app;

#[test]
fn an_authorization_given_while_still_subscribed_opens_the_next_subscription() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, alice) = app.member("alice@acme.test", "acme", "agent");
    let channel = format!("private-company.{acme}.orders");

    let mut ws = app.ws();
    app.join_channel(&mut ws, &alice, &channel);
    // The next screen's authorization, recorded by the hub while the socket still holds the
    // channel (the subscriptions query is a round trip through the hub, after the grant).
    let reply = app.channel_auth(&alice, &ws.socket_id, &channel);
    assert_eq!(reply.status, 200, "{}", reply.text());
    app.app.hub.subscriptions().expect("subscriptions");
    ws.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}));
    ws.assert_nothing_pending();
    ws.subscribe_with(&channel, &reply.json());

    // Used once, as every authorization: the same signature does not open a third time.
    ws.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}));
    ws.assert_nothing_pending();
    let again = ws.subscribe(&channel, reply.json()["auth"].as_str(), None);
    assert_eq!(again["event"], "pusher:subscription_error", "{again}");
}
