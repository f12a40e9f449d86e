//! `private-admin.<id>`: the system admin who asked for an asynchronous tenant hears
//! `tenant.provisioned` there; no other admin, no tenant's user (through any tenant's address)
//! can hold that channel, and none of them hears the event.

use std::time::Duration;

use serde_json::json;
use tenantd::api::jobs;

use crate::jobs::app_with_workers;
use crate::support::TestApp;

const OTHER_ADMIN: &str = "second-admin@example.test";
const OTHER_PASSWORD: &str = "second admin password";

/// Logs a system admin in: their id and bearer token.
fn admin_login(test: &TestApp, email: &str, password: &str) -> (i64, String) {
    let reply = test.call(
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(&json!({"email": email, "password": password}).to_string()),
    );
    assert_eq!(reply.status, 200, "admin login: {}", reply.text());
    let body = reply.json();
    (
        body["admin"]["id"].as_i64().unwrap(),
        body["token"].as_str().unwrap().to_string(),
    )
}

fn admin_channel_auth(test: &TestApp, token: &str, socket_id: &str, channel: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    test.auth_request(
        "/api/admin/broadcasting/auth",
        &[("Authorization", &bearer)],
        socket_id,
        channel,
    )
    .status
}

#[test]
fn only_the_admin_who_asked_hears_their_tenant_provisioned() {
    let test = app_with_workers(1, 10);
    let (me, my_token) = admin_login(
        &test,
        crate::support::ADMIN_EMAIL,
        crate::support::ADMIN_PASSWORD,
    );
    let hash = tenantd::auth::password::hash(OTHER_PASSWORD).unwrap();
    test.app.catalog.create_admin(OTHER_ADMIN, &hash).unwrap();
    let (other, other_token) = admin_login(&test, OTHER_ADMIN, OTHER_PASSWORD);
    let mine = format!("private-admin.{me}");
    let theirs = format!("private-admin.{other}");
    test.create_tenant("alpha", &[]);
    let (_, alpha_admin) = test.member("alpha-admin@example.test", "alpha", "admin");

    let mut my_socket = test.ws();
    let granted = test.auth_request(
        "/api/admin/broadcasting/auth",
        &[("Authorization", &format!("Bearer {my_token}"))],
        &my_socket.socket_id,
        &mine,
    );
    assert_eq!(granted.status, 200, "{}", granted.text());
    my_socket.subscribe_with(&mine, &granted.json());

    // Another admin: their own channel, never mine.
    let mut other_socket = test.ws();
    let sid = other_socket.socket_id.clone();
    assert_eq!(admin_channel_auth(&test, &other_token, &sid, &mine), 403);
    let own = test.auth_request(
        "/api/admin/broadcasting/auth",
        &[("Authorization", &format!("Bearer {other_token}"))],
        &sid,
        &theirs,
    );
    assert_eq!(own.status, 200, "{}", own.text());
    other_socket.subscribe_with(&theirs, &own.json());
    // Their signature for their channel does not open mine.
    let forged = other_socket.subscribe(&mine, own.json()["auth"].as_str(), None);
    assert_eq!(forged["event"], "pusher:subscription_error", "{forged}");

    // A tenant's admin, on the central host and through their tenant's address, and with no
    // credentials at all: refused.
    let mut user_socket = test.ws();
    let usid = user_socket.socket_id.clone();
    let central = test.channel_auth(&alpha_admin, &usid, &mine);
    assert_eq!(central.status, 403, "{}", central.text());
    let bearer = format!("Bearer {alpha_admin}");
    let through_tenant = test.auth_request(
        "/t/alpha/broadcasting/auth",
        &[("Authorization", &bearer)],
        &usid,
        &mine,
    );
    assert_eq!(through_tenant.status, 403, "{}", through_tenant.text());
    let as_admin = admin_channel_auth(&test, &alpha_admin, &usid, &mine);
    assert!(
        matches!(as_admin, 401 | 403),
        "a user's token is no admin's: {as_admin}"
    );
    let anonymous = test.auth_request("/api/admin/broadcasting/auth", &[], &usid, &mine);
    assert_eq!(anonymous.status, 401);
    let unsigned = user_socket.subscribe(&mine, None, None);
    assert_eq!(unsigned["event"], "pusher:subscription_error", "{unsigned}");
    // I ask for a tenant; the job runs; I am told, on my channel only.
    let reply = test.as_bearer(
        &my_token,
        "POST",
        "/api/admin/tenants",
        &[],
        Some(json!({"slug": "later", "name": "Later Ltd", "async": true})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let tenant_id = reply.json()["tenant"]["id"].as_str().unwrap().to_string();
    jobs::start_workers(&test.app);
    let told = my_socket.recv_event("tenant.provisioned", Some(&mine));
    let data = crate::support::frame_data(&told);
    assert_eq!(data["tenant"]["id"], tenant_id.as_str());
    assert_eq!(data["tenant"]["status"], "active");
    other_socket.assert_nothing_pending();
    user_socket.assert_nothing_pending();
    assert!(
        my_socket.recv_within(Duration::from_millis(50)).is_none(),
        "told once"
    );
}
