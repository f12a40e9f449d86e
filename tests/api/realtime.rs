//! Real-time channels through the real server, as the API side sees them: who may subscribe to
//! which channel (`POST /broadcasting/auth`, then a real `pusher:subscribe` on `/app/{key}`),
//! forged signatures, the events the workspace publishes after its writes, subscriptions ended
//! when their owner loses the right to them, tenant isolation of channel authorization, the
//! Pusher HTTP API, and `tenantd realtime credentials`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{frame_data, spawn_app, Reply, TestApp, Ws};

/// A revocation must reach the socket within this long after the change.
const REVOKED_WITHIN: Duration = Duration::from_secs(5);

fn orders(tenant: &str) -> String {
    format!("private-company.{tenant}.orders")
}

fn chat(tenant: &str, chat: i64) -> String {
    format!("private-company.{tenant}.chat.{chat}")
}

fn presence(tenant: &str) -> String {
    format!("presence-company.{tenant}.presence")
}

fn user(id: i64) -> String {
    format!("private-App.Models.User.{id}")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn names(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {value}"))
}

fn tenant_id(app: &TestApp, slug: &str) -> String {
    app.app
        .catalog
        .by_slug(slug)
        .unwrap()
        .expect("tenant")
        .id
        .clone()
}

fn create_chat(app: &TestApp, token: &str, slug: &str, title: &str, others: &[i64]) -> i64 {
    let body = json!({"title": title, "kind": "group", "participant_ids": others});
    let reply = app.on(token, slug, "POST", "/api/chats", Some(body));
    assert_eq!(reply.status, 201, "create chat: {}", reply.text());
    id_of(&reply.json())
}

fn new_order(title: &str, assigned_to: Option<i64>) -> Value {
    json!({
        "title": title,
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "customer_phone": "+1 555 0100",
        "amount_minor": 12_500,
        "currency": "EUR",
        "notes": "fragile",
        "assigned_to": assigned_to,
    })
}

/// The id of a tenant's role by name.
fn role_id(app: &TestApp, slug: &str, name: &str) -> i64 {
    let reply = app.on(&app.owner_token, slug, "GET", "/api/roles", None);
    assert_eq!(reply.status, 200, "roles: {}", reply.text());
    reply.json()["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == name)
        .map(id_of)
        .unwrap_or_else(|| panic!("no role {name}"))
}

fn expect_refused(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (403, "forbidden"),
        "{what}: {}",
        reply.text()
    );
}

/// Waits for the `pusher:subscription_error`s that end `channels` on this socket (in any order:
/// one pass may end several), at most [`REVOKED_WITHIN`] after `since`.
fn expect_revoked_all(ws: &mut Ws, channels: &[&str], since: Instant, who: &str) {
    let mut ended = BTreeSet::new();
    while ended.len() < channels.len() {
        let left = REVOKED_WITHIN.saturating_sub(since.elapsed());
        let frame = ws.recv_within(left).unwrap_or_else(|| {
            panic!("{who}: only {ended:?} of {channels:?} revoked within {REVOKED_WITHIN:?}")
        });
        assert_eq!(
            frame["event"], "pusher:subscription_error",
            "{who}: {frame}"
        );
        assert_eq!(frame_data(&frame)["status"], 403, "{who}: {frame}");
        let channel = frame["channel"].as_str().unwrap_or_default().to_string();
        assert!(channels.contains(&channel.as_str()), "{who}: {frame}");
        ended.insert(channel);
    }
}

fn expect_revoked(ws: &mut Ws, channel: &str, since: Instant, who: &str) {
    expect_revoked_all(ws, &[channel], since, who);
}

fn subscribed(app: &TestApp, ws: &Ws, channel: &str) -> bool {
    app.app
        .hub
        .subscriptions()
        .expect("subscriptions")
        .iter()
        .any(|s| s.socket_id == ws.socket_id && s.channel == channel)
}

// ---------------------------------------------------------------------------------------------
// Who may subscribe to what.
// ---------------------------------------------------------------------------------------------

/// How an authorization request is sent.
#[derive(Clone, Debug)]
enum Via {
    /// `/broadcasting/auth`, no tenant named.
    Plain,
    /// `/t/{slug}/broadcasting/auth`.
    Path(&'static str),
    /// A request header naming a tenant (`X-Tenant-Slug`, `X-Tenant-Id`, `Host`).
    Header(&'static str, String),
}

impl Via {
    fn send(&self, app: &TestApp, token: &str, socket_id: &str, channel: &str) -> Reply {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("Authorization", bearer.as_str())];
        let path = match self {
            Via::Plain => "/broadcasting/auth".to_string(),
            Via::Path(slug) => format!("/t/{slug}/broadcasting/auth"),
            Via::Header(name, value) => {
                headers.push((name, value.as_str()));
                "/broadcasting/auth".to_string()
            }
        };
        app.auth_request(&path, &headers, socket_id, channel)
    }
}

struct Case {
    what: String,
    token: String,
    via: Via,
    channel: String,
    /// A socket id to send instead of the real one.
    socket_id: Option<&'static str>,
    allowed: bool,
}

fn case(what: &str, token: &str, channel: String, allowed: bool) -> Case {
    Case {
        what: what.to_string(),
        token: token.to_string(),
        via: Via::Plain,
        channel,
        socket_id: None,
        allowed,
    }
}

impl Case {
    fn via(mut self, via: Via) -> Case {
        self.via = via;
        self
    }

    fn socket(mut self, socket_id: &'static str) -> Case {
        self.socket_id = Some(socket_id);
        self
    }
}

#[test]
fn broadcasting_auth_applies_every_channel_rule() {
    let app = spawn_app();
    app.create_tenant("acme", &["acme.test"]);
    app.create_tenant("globex", &["globex.test"]);
    app.create_tenant("dormant", &[]);
    let (acme, globex, dormant) = (
        tenant_id(&app, "acme"),
        tenant_id(&app, "globex"),
        tenant_id(&app, "dormant"),
    );
    let owner = app.owner_token.clone();
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (_, mike) = app.member("mike@acme.test", "acme", "manager");
    let (_, vic) = app.member("vic@acme.test", "acme", "viewer");
    app.create_role("acme", "bystander", &["members_view"]);
    let (pat_id, pat) = app.member("pat@acme.test", "acme", "bystander");
    let (_, nobody) = app.member("nobody@acme.test", "acme", "bystander");
    let (gus_id, gus) = app.member("gus@globex.test", "globex", "agent");
    app.join(alice_id, "dormant", "admin");
    // One role per order permission, each alone.
    let mut by_permission = Vec::new();
    for permission in [
        "orders_view",
        "orders_view_all",
        "orders_simple_view",
        "orders_simple_view_all",
    ] {
        let role = permission.replace('_', "-");
        app.create_role("acme", &role, &[permission]);
        let (_, token) = app.member(&format!("{role}@acme.test"), "acme", &role);
        by_permission.push((permission, token));
    }

    // Alice's chat (Pat takes part), the owner's own chat, and a chat of globex whose id does
    // not exist in acme's file.
    let alices = create_chat(&app, &alice, "acme", "alice and pat", &[pat_id]);
    let owners = create_chat(&app, &owner, "acme", "owner alone", &[]);
    for n in 0..3 {
        create_chat(&app, &gus, "globex", &format!("globex {n}"), &[]);
    }
    let globex_chat = create_chat(&app, &gus, "globex", "gus", &[]);
    assert!(globex_chat > owners, "ids {globex_chat} and {owners}");
    let suspended = app.admin("POST", "/api/admin/tenants/dormant/suspend", None);
    assert_eq!(suspended.status, 200, "suspend: {}", suspended.text());

    // A personal token of the owner bound to globex.
    let (_, bound) = app.personal_token(&owner, "globex only", "globex");
    let unknown = uuid::Uuid::new_v4().to_string();

    let mut cases = vec![
        // The user's own channel.
        case("own user channel", &alice, user(alice_id), true),
        case("another user's channel", &alice, user(gus_id), false),
        case("the owner's channel", &mike, user(app.owner_id), false),
        // Chats: member, chat in that company, and admin / chats_view_all / participant.
        case("chat: its creator", &alice, chat(&acme, alices), true),
        case("chat: a participant", &pat, chat(&acme, alices), true),
        case("chat: chats_view_all", &mike, chat(&acme, owners), true),
        case("chat: admin", &owner, chat(&acme, alices), true),
        case(
            "chat: not a participant",
            &alice,
            chat(&acme, owners),
            false,
        ),
        case("chat: no permission", &nobody, chat(&acme, alices), false),
        case("chat: viewer", &vic, chat(&acme, alices), false),
        case("chat: missing", &owner, chat(&acme, 999_999), false),
        case(
            "chat: of globex, by id",
            &owner,
            chat(&acme, globex_chat),
            false,
        ),
        case(
            "chat: of globex, by a stranger",
            &alice,
            chat(&globex, 1),
            false,
        ),
        case(
            "chat: admin of globex",
            &owner,
            chat(&globex, globex_chat),
            true,
        ),
        // Orders: member with admin or any order permission.
        case("orders: admin", &owner, orders(&acme), true),
        case("orders: agent", &alice, orders(&acme), true),
        case("orders: manager", &mike, orders(&acme), true),
        case("orders: viewer", &vic, orders(&acme), true),
        case("orders: no permission", &nobody, orders(&acme), false),
        case("orders: participant only", &pat, orders(&acme), false),
        case("orders: another company", &alice, orders(&globex), false),
        // Presence: any member.
        case("presence: member", &nobody, presence(&acme), true),
        case("presence: admin", &owner, presence(&globex), true),
        case("presence: not a member", &gus, presence(&acme), false),
        // Companies that are not there or not active.
        case("unknown company: orders", &owner, orders(&unknown), false),
        case(
            "unknown company: presence",
            &owner,
            presence(&unknown),
            false,
        ),
        case("unknown company: chat", &owner, chat(&unknown, 1), false),
        case("suspended company: orders", &alice, orders(&dormant), false),
        case(
            "suspended company: presence",
            &alice,
            presence(&dormant),
            false,
        ),
        // Malformed channel names.
        case(
            "upper-case uuid",
            &owner,
            orders(&acme.to_uppercase()),
            false,
        ),
        case(
            "uuid without hyphens",
            &owner,
            orders(&acme.replace('-', "")),
            false,
        ),
        case(
            "no chat id",
            &owner,
            format!("private-company.{acme}.chat."),
            false,
        ),
        case(
            "no suffix",
            &owner,
            format!("private-company.{acme}"),
            false,
        ),
        case(
            "no company",
            &owner,
            "private-company..orders".into(),
            false,
        ),
        case(
            "unknown suffix",
            &owner,
            format!("private-company.{acme}.secrets"),
            false,
        ),
        case(
            "trailing part",
            &owner,
            format!("private-company.{acme}.orders.x"),
            false,
        ),
        case(
            "presence of orders",
            &owner,
            format!("presence-company.{acme}.orders"),
            false,
        ),
        case(
            "private presence",
            &owner,
            format!("private-company.{acme}.presence"),
            false,
        ),
        case(
            "no user id",
            &alice,
            "private-App.Models.User.".into(),
            false,
        ),
        case(
            "signed user id",
            &alice,
            format!("private-App.Models.User.+{alice_id}"),
            false,
        ),
        case(
            "user id with a leading zero",
            &alice,
            format!("private-App.Models.User.0{alice_id}"),
            false,
        ),
        case(
            "chat id with a leading zero",
            &alice,
            format!("private-company.{acme}.chat.0{alices}"),
            false,
        ),
        case("a public channel", &alice, "announcements".into(), false),
        case("empty", &alice, String::new(), false),
        // Malformed socket ids.
        case("socket id without dot", &alice, user(alice_id), false).socket("1234"),
        case("socket id not digits", &alice, user(alice_id), false).socket("a.b"),
        case("socket id of three parts", &alice, user(alice_id), false).socket("1.2.3"),
        case("socket id half empty", &alice, user(alice_id), false).socket("1."),
        case("negative socket id", &alice, user(alice_id), false).socket("-1.2"),
        case("empty socket id", &alice, user(alice_id), false).socket(""),
        case("overlong socket id", &alice, user(alice_id), false).socket("123456789012345678901.1"),
        // A request that named a tenant authorizes that tenant's channels only.
        case("named acme, acme orders", &owner, orders(&acme), true).via(Via::Path("acme")),
        case("named acme, globex orders", &owner, orders(&globex), false).via(Via::Path("acme")),
        case(
            "named acme, globex chat",
            &owner,
            chat(&globex, globex_chat),
            false,
        )
        .via(Via::Path("acme")),
        case(
            "named acme, globex presence",
            &owner,
            presence(&globex),
            false,
        )
        .via(Via::Path("acme")),
        case(
            "named acme, own user channel",
            &owner,
            user(app.owner_id),
            true,
        )
        .via(Via::Path("acme")),
        case("slug globex, acme orders", &owner, orders(&acme), false)
            .via(Via::Header("X-Tenant-Slug", "globex".into())),
        case("id globex, acme presence", &owner, presence(&acme), false)
            .via(Via::Header("X-Tenant-Id", globex.clone())),
        case("host globex, acme orders", &owner, orders(&acme), false)
            .via(Via::Header("Host", "globex.localhost".into())),
        case(
            "domain acme.test, globex orders",
            &owner,
            orders(&globex),
            false,
        )
        .via(Via::Header("Host", "acme.test".into())),
        case("domain acme.test, acme orders", &owner, orders(&acme), true)
            .via(Via::Header("Host", "acme.test".into())),
        // A personal token bound to globex.
        case("bound token, globex orders", &bound, orders(&globex), true),
        case("bound token, acme orders", &bound, orders(&acme), false),
        case("bound token, acme chat", &bound, chat(&acme, owners), false),
        case("bound token, acme presence", &bound, presence(&acme), false),
        // The user's own channel carries notifications from every company: not for a token
        // bound to one of them.
        case(
            "bound token, own user channel",
            &bound,
            user(app.owner_id),
            false,
        ),
    ];
    for (permission, token) in &by_permission {
        cases.push(case(
            &format!("orders: {permission} alone"),
            token,
            orders(&acme),
            true,
        ));
    }

    let (_, key, _) = app.app.realtime_credentials();
    for c in &cases {
        let mut ws = app.ws();
        let socket_id = c.socket_id.unwrap_or(&ws.socket_id).to_string();
        let reply = c.via.send(&app, &c.token, &socket_id, &c.channel);
        if !c.allowed {
            expect_refused(&reply, &c.what);
            continue;
        }
        assert_eq!(reply.status, 200, "{}: {}", c.what, reply.text());
        let answer = reply.json();
        let auth = answer["auth"].as_str().expect("auth");
        assert!(auth.starts_with(&format!("{key}:")), "{}: {auth}", c.what);
        assert_eq!(
            answer.get("channel_data").is_some(),
            c.channel.starts_with("presence-"),
            "{}: {answer}",
            c.what
        );
        ws.subscribe_with(&c.channel, &answer);
    }
}

#[test]
fn presence_channel_data_names_the_member_and_the_roster_follows() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let acme = tenant_id(&app, "acme");
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (mike_id, mike) = app.member("mike@acme.test", "acme", "viewer");
    let channel = presence(&acme);

    let mut a = app.ws();
    let reply = app.channel_auth(&alice, &a.socket_id, &channel);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    let data: Value = serde_json::from_str(answer["channel_data"].as_str().expect("a string"))
        .expect("channel_data is JSON");
    assert_eq!(keys(&data), names(&["user_id", "user_info"]), "{data}");
    assert_eq!(data["user_id"], alice_id.to_string());
    let info = &data["user_info"];
    assert_eq!(
        keys(info),
        names(&["id", "name", "surname", "email", "photo"]),
        "{info}"
    );
    assert_eq!(
        info,
        &json!({"id": alice_id, "name": "alice", "surname": "", "email": "alice@acme.test",
                "photo": null})
    );
    let joined = a.subscribe_with(&channel, &answer);
    assert_eq!(joined["presence"]["ids"], json!([alice_id.to_string()]));
    assert_eq!(joined["presence"]["hash"][alice_id.to_string()], *info);

    // Another member joins: alice is told, with their info.
    let mut m = app.ws();
    let roster = app.join_channel(&mut m, &mike, &channel);
    assert_eq!(roster["presence"]["count"], 2, "{roster}");
    let added = a.recv_event("pusher_internal:member_added", Some(&channel));
    let added = frame_data(&added);
    assert_eq!(added["user_id"], mike_id.to_string());
    assert_eq!(added["user_info"]["email"], "mike@acme.test");

    // Changing channel_data after signing is a forgery.
    let mut forger = app.ws();
    let reply = app.channel_auth(&mike, &forger.socket_id, &channel);
    let answer = reply.json();
    let lie = json!({"user_id": alice_id.to_string(), "user_info": {"name": "alice"}}).to_string();
    let refused = forger.subscribe(&channel, answer["auth"].as_str(), Some(&lie));
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    a.assert_nothing_pending();
}

#[test]
fn broadcasting_auth_takes_json_cookies_with_csrf_and_refuses_anonymous_callers() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let acme = tenant_id(&app, "acme");
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let channel = orders(&acme);

    // The same fields as JSON.
    let mut ws = app.ws();
    let body = json!({"socket_id": ws.socket_id, "channel_name": channel}).to_string();
    let bearer = format!("Bearer {alice}");
    let reply = app.call(
        "POST",
        "/broadcasting/auth",
        &[("Authorization", &bearer)],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "JSON: {}", reply.text());
    ws.subscribe_with(&channel, &reply.json());

    // By session cookie: a state-changing call, so the CSRF header is required.
    let login = app.login("alice@acme.test", "member-password-1");
    let token = login.json()["token"].as_str().unwrap().to_string();
    let csrf = login.json()["csrf_token"].as_str().unwrap().to_string();
    let cookie = format!("tenantd_session={token}");
    let mut ws = app.ws();
    let without = app.auth_request(
        "/broadcasting/auth",
        &[("Cookie", &cookie)],
        &ws.socket_id,
        &channel,
    );
    assert_eq!(
        (without.status, without.error_code().as_str()),
        (403, "csrf_failed"),
        "{}",
        without.text()
    );
    let wrong = app.auth_request(
        "/broadcasting/auth",
        &[("Cookie", &cookie), ("X-CSRF-Token", "not-the-token")],
        &ws.socket_id,
        &channel,
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    let with = app.auth_request(
        "/broadcasting/auth",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        &ws.socket_id,
        &channel,
    );
    assert_eq!(with.status, 200, "cookie and CSRF: {}", with.text());
    ws.subscribe_with(&channel, &with.json());

    // No credentials, or bad ones.
    for (what, headers) in [
        ("none", vec![]),
        ("unknown bearer", vec![("Authorization", "Bearer nope")]),
        ("unknown cookie", vec![("Cookie", "tenantd_session=nope")]),
    ] {
        let reply = app.auth_request(
            "/broadcasting/auth",
            &headers,
            &ws.socket_id,
            &user(alice_id),
        );
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    }
    // A system admin is not a user account: refused.
    let reply = app.channel_auth(&app.admin_token, &ws.socket_id, &orders(&acme));
    assert_eq!(reply.status, 403, "admin: {}", reply.text());
    // Fields missing.
    let reply = app.call(
        "POST",
        "/broadcasting/auth",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(&format!("socket_id={}", ws.socket_id)),
    );
    expect_refused(&reply, "no channel_name");
}

// ---------------------------------------------------------------------------------------------
// Forged subscriptions.
// ---------------------------------------------------------------------------------------------

#[test]
fn forged_or_borrowed_signatures_are_refused_by_the_socket() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let acme = tenant_id(&app, "acme");
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (_, key, _) = app.app.realtime_credentials();
    let mut ws = app.ws();

    let error = |ws: &mut Ws, channel: &str, auth: Option<&str>| {
        let reply = ws.subscribe(channel, auth, None);
        assert_eq!(
            (reply["event"].as_str(), reply["channel"].as_str()),
            (Some("pusher:subscription_error"), Some(channel)),
            "{auth:?}: {reply}"
        );
    };
    let zeros = format!("{key}:{}", "0".repeat(64));
    error(&mut ws, &user(alice_id), Some(&zeros));
    error(&mut ws, &orders(&acme), Some("garbage"));
    error(&mut ws, &orders(&acme), None);
    // Signed with another secret.
    let forged =
        tenantd::realtime::sign_channel("guess", &key, &ws.socket_id, &orders(&acme), None);
    error(&mut ws, &orders(&acme), Some(&forged));

    // An authorization is for one socket and one channel.
    let mut other = app.ws();
    let theirs = app.channel_auth(&alice, &other.socket_id, &orders(&acme));
    assert_eq!(theirs.status, 200, "{}", theirs.text());
    let theirs = theirs.json()["auth"].as_str().unwrap().to_string();
    error(&mut ws, &orders(&acme), Some(&theirs));
    let mine = app.channel_auth(&alice, &ws.socket_id, &user(alice_id));
    let mine = mine.json()["auth"].as_str().unwrap().to_string();
    error(&mut ws, &orders(&acme), Some(&mine));
    // The right one works, and nothing was subscribed by the refusals.
    ws.subscribe_with(&user(alice_id), &json!({ "auth": mine }));
    other.subscribe_with(&orders(&acme), &json!({ "auth": theirs }));
    assert!(!subscribed(&app, &ws, &orders(&acme)));
}

// ---------------------------------------------------------------------------------------------
// Events published after writes.
// ---------------------------------------------------------------------------------------------

#[test]
fn chat_messages_arrive_on_the_chat_channel_except_on_the_senders_socket() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let acme = tenant_id(&app, "acme");
    let (_, alice) = app.member("alice@acme.test", "acme", "agent");
    let (_, mike) = app.member("mike@acme.test", "acme", "manager");
    let chat_id = create_chat(&app, &alice, "acme", "team", &[]);
    let other_chat = create_chat(&app, &alice, "acme", "other", &[]);
    let channel = chat(&acme, chat_id);

    let mut mine = app.ws();
    let mut my_other_tab = app.ws();
    let mut mikes = app.ws();
    let mut elsewhere = app.ws();
    app.join_channel(&mut mine, &alice, &channel);
    app.join_channel(&mut my_other_tab, &alice, &channel);
    app.join_channel(&mut mikes, &mike, &channel);
    app.join_channel(&mut elsewhere, &alice, &chat(&acme, other_chat));

    let path = format!("/t/acme/api/chats/{chat_id}/messages");
    let posted = app.as_bearer(
        &alice,
        "POST",
        &path,
        &[("X-Socket-ID", &mine.socket_id)],
        Some(json!({"body": "hello from the API"})),
    );
    assert_eq!(posted.status, 201, "{}", posted.text());
    let message = posted.json();
    for ws in [&mut my_other_tab, &mut mikes] {
        let frame = ws.recv_event("message.created", Some(&channel));
        assert!(
            frame["data"].is_string(),
            "data must be a JSON string: {frame}"
        );
        let data = frame_data(&frame);
        assert_eq!(keys(&data), names(&["message"]), "{data}");
        assert_eq!(data["message"]["id"], message["id"]);
        assert_eq!(data["message"]["body"], "hello from the API");
    }
    mine.assert_nothing_pending();
    elsewhere.assert_nothing_pending();

    // Without X-Socket-ID every subscriber gets it.
    let posted = app.as_bearer(&alice, "POST", &path, &[], Some(json!({"body": "hi"})));
    assert_eq!(posted.status, 201, "{}", posted.text());
    for ws in [&mut mine, &mut my_other_tab, &mut mikes] {
        let frame = ws.recv_event("message.created", Some(&channel));
        assert_eq!(frame_data(&frame)["message"]["body"], "hi");
    }
}

#[test]
fn order_events_carry_only_the_shared_fields_and_assignees_are_notified() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let acme = tenant_id(&app, "acme");
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (mike_id, mike) = app.member("mike@acme.test", "acme", "manager");
    let (_, vic) = app.member("vic@acme.test", "acme", "viewer");
    let (_, gus) = app.member("gus@globex.test", "globex", "manager");
    let owner = app.owner_token.clone();
    let shared = names(&["id", "number", "status", "updated_at"]);
    let channel = orders(&acme);

    let mut vics = app.ws();
    let mut owners = app.ws();
    let mut alices = app.ws();
    let mut mikes = app.ws();
    let mut globex_orders = app.ws();
    app.join_channel(&mut vics, &vic, &channel);
    app.join_channel(&mut owners, &owner, &channel);
    app.join_channel(&mut alices, &alice, &user(alice_id));
    app.join_channel(&mut mikes, &mike, &user(mike_id));
    app.join_channel(
        &mut globex_orders,
        &gus,
        &orders(&tenant_id(&app, "globex")),
    );

    // Created, assigned to alice: the channel gets the four fields, alice a notification.
    let created = app.on(
        &owner,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order("Ship the thing", Some(alice_id))),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let order = created.json();
    for ws in [&mut vics, &mut owners] {
        let frame = ws.recv_event("order.created", Some(&channel));
        let data = frame_data(&frame);
        assert_eq!(keys(&data), shared, "{data}");
        for field in &shared {
            assert_eq!(data[field], order[field], "{field} in {data}");
        }
    }
    let note = alices.recv_event("notification", Some(&user(alice_id)));
    let note = frame_data(&note);
    assert_eq!(note["type"], "order.assigned", "{note}");
    assert_eq!(note["order_id"], order["id"]);
    assert_eq!(note["tenant_id"], acme);
    mikes.assert_nothing_pending();

    // Updated from the owner's socket: not sent back to it.
    let id = id_of(&order);
    let updated = app.as_bearer(
        &owner,
        "PATCH",
        &format!("/t/acme/api/orders/{id}"),
        &[("X-Socket-ID", &owners.socket_id)],
        Some(json!({"status": "confirmed", "customer_name": "Grace Hopper"})),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    let order = updated.json();
    let frame = vics.recv_event("order.updated", Some(&channel));
    let data = frame_data(&frame);
    assert_eq!(keys(&data), shared, "{data}");
    assert_eq!(data["status"], "confirmed");
    assert_eq!(data["updated_at"], order["updated_at"]);
    owners.assert_nothing_pending();

    // Reassigned to mike: mike is notified, alice is not.
    let reassigned = app.on(
        &owner,
        "acme",
        "PATCH",
        &format!("/api/orders/{id}"),
        Some(json!({ "assigned_to": mike_id })),
    );
    assert_eq!(reassigned.status, 200, "{}", reassigned.text());
    let data = frame_data(&vics.recv_event("order.updated", Some(&channel)));
    assert_eq!(keys(&data), shared, "{data}");
    let note = frame_data(&mikes.recv_event("notification", Some(&user(mike_id))));
    assert_eq!(
        (note["type"].as_str(), note["order_id"].as_i64()),
        (Some("order.assigned"), Some(id))
    );
    alices.assert_nothing_pending();

    // Deleted: the id alone.
    let deleted = app.on(&owner, "acme", "DELETE", &format!("/api/orders/{id}"), None);
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let data = frame_data(&vics.recv_event("order.deleted", Some(&channel)));
    assert!(keys(&data).is_subset(&shared), "{data}");
    assert_eq!(data["id"], id);
    // Nothing of acme reached globex's channel.
    globex_orders.assert_nothing_pending();
}

// ---------------------------------------------------------------------------------------------
// Revocation.
// ---------------------------------------------------------------------------------------------

#[test]
fn subscriptions_end_within_seconds_when_their_owner_loses_the_right() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("later", &[]);
    let acme = tenant_id(&app, "acme");
    let later = tenant_id(&app, "later");
    let owner = app.owner_token.clone();
    app.create_role("acme", "bystander", &["members_view"]);
    app.create_role("acme", "ops", &["orders_view"]);
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (_, bob) = app.member("bob@acme.test", "acme", "agent");
    let (carol_id, carol) = app.member("carol@acme.test", "acme", "agent");
    let (_, frank) = app.member("frank@acme.test", "acme", "ops");
    let (_, dave) = app.member("dave@acme.test", "acme", "agent");
    let (_, erin) = app.member("erin@later.test", "later", "agent");
    let (pat_id, pat) = app.member("pat@acme.test", "acme", "bystander");
    let chat_id = create_chat(&app, &dave, "acme", "dave and pat", &[pat_id]);
    let channel = orders(&acme);

    let mut removed = app.ws();
    let mut logged_out = app.ws();
    let mut demoted = app.ws();
    let mut role_emptied = app.ws();
    let mut suspended = app.ws();
    let mut control = app.ws();
    let mut left_chat = app.ws();
    app.join_channel(&mut left_chat, &pat, &chat(&acme, chat_id));
    app.join_channel(&mut removed, &alice, &channel);
    app.join_channel(&mut removed, &alice, &user(alice_id));
    app.join_channel(&mut removed, &alice, &presence(&acme));
    app.join_channel(&mut logged_out, &bob, &channel);
    app.join_channel(&mut demoted, &carol, &channel);
    app.join_channel(&mut role_emptied, &frank, &channel);
    app.join_channel(&mut suspended, &erin, &orders(&later));
    app.join_channel(&mut control, &dave, &channel);
    app.join_channel(&mut control, &dave, &presence(&acme));
    // Alice saw dave join the roster.
    removed.recv_event("pusher_internal:member_added", Some(&presence(&acme)));

    let ok = |reply: Reply, what: &str| assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    let started = Instant::now();
    ok(
        app.on(
            &owner,
            "acme",
            "DELETE",
            &format!("/api/members/{alice_id}"),
            None,
        ),
        "remove alice",
    );
    ok(
        app.as_bearer(&bob, "POST", "/api/auth/logout", &[], None),
        "bob logs out",
    );
    ok(
        app.on(
            &owner,
            "acme",
            "PATCH",
            &format!("/api/members/{carol_id}"),
            Some(json!({"role": "bystander"})),
        ),
        "carol loses her order permission",
    );
    ok(
        app.on(
            &owner,
            "acme",
            "PATCH",
            &format!("/api/roles/{}", role_id(&app, "acme", "ops")),
            Some(json!({"permissions": ["members_view"]})),
        ),
        "frank's role loses its order permission",
    );
    ok(
        app.admin("POST", "/api/admin/tenants/later/suspend", None),
        "suspend later",
    );
    let path = format!("/api/chats/{chat_id}/participants/{pat_id}");
    ok(
        app.on(&dave, "acme", "DELETE", &path, None),
        "pat leaves the chat",
    );

    // Alice loses the company's channels (orders and presence); her own channel stays.
    expect_revoked_all(
        &mut removed,
        &[&channel, &presence(&acme)],
        started,
        "removed from the company",
    );
    expect_revoked(&mut logged_out, &channel, started, "logged out");
    expect_revoked(&mut demoted, &channel, started, "role changed");
    expect_revoked(&mut role_emptied, &channel, started, "role edited");
    expect_revoked(
        &mut suspended,
        &orders(&later),
        started,
        "company suspended",
    );
    // Pat is told he was removed, on the chat he is still subscribed to, then loses it.
    left_chat.recv_event("participant.removed", Some(&chat(&acme, chat_id)));
    expect_revoked(
        &mut left_chat,
        &chat(&acme, chat_id),
        started,
        "left the chat",
    );
    // The others saw her leave the roster.
    let left = control.recv_event("pusher_internal:member_removed", Some(&presence(&acme)));
    assert_eq!(frame_data(&left)["user_id"], alice_id.to_string());
    assert!(subscribed(&app, &removed, &user(alice_id)));

    // Order events now reach only the member who kept the right.
    let created = app.on(
        &owner,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order("after", None)),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    control.recv_event("order.created", Some(&channel));
    for ws in [
        &mut removed,
        &mut logged_out,
        &mut demoted,
        &mut role_emptied,
    ] {
        ws.assert_nothing_pending();
    }
    // And none of them can sign up again.
    for (who, token, ws) in [
        ("alice", &alice, &removed),
        ("carol", &carol, &demoted),
        ("frank", &frank, &role_emptied),
    ] {
        expect_refused(&app.channel_auth(token, &ws.socket_id, &channel), who);
    }
    let reply = app.channel_auth(&bob, &logged_out.socket_id, &channel);
    assert_eq!(reply.status, 401, "bob: {}", reply.text());
}

#[test]
fn replayed_or_unrecorded_authorizations_are_refused() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let acme = tenant_id(&app, "acme");
    let owner = app.owner_token.clone();
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (_, bob) = app.member("bob@acme.test", "acme", "agent");
    let channel = orders(&acme);
    let refused = |ws: &mut Ws, answer: &serde_json::Value, who: &str| {
        let reply = ws.subscribe(
            &channel,
            answer["auth"].as_str(),
            answer["channel_data"].as_str(),
        );
        assert_eq!(
            reply["event"], "pusher:subscription_error",
            "{who}: {reply}"
        );
        assert_eq!(frame_data(&reply)["status"], 403, "{who}: {reply}");
        assert!(!subscribed(&app, ws, &channel), "{who}");
    };

    // Alice subscribes, leaves, and tries again with the same signature: the HMAC does not
    // expire, but the endpoint's record of whom it was for was used up the first time.
    let mut replayed = app.ws();
    let reply = app.channel_auth(&alice, &replayed.socket_id, &channel);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    replayed.subscribe_with(&channel, &answer);
    replayed.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}));
    replayed.assert_nothing_pending();
    refused(&mut replayed, &answer, "replayed signature");

    // Bob asks for his authorization, then for enough others on the same socket that the
    // first is no longer remembered when he finally subscribes with it.
    let mut crowded = app.ws();
    let reply = app.channel_auth(&bob, &crowded.socket_id, &channel);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer_bob = reply.json();
    let mut others = vec![presence(&acme)];
    for n in 0..40 {
        let chat_id = create_chat(&app, &bob, "acme", &format!("chat {n}"), &[]);
        others.push(chat(&acme, chat_id));
    }
    for other in &others {
        let reply = app.channel_auth(&bob, &crowded.socket_id, other);
        assert_eq!(reply.status, 200, "{other}: {}", reply.text());
    }
    refused(&mut crowded, &answer_bob, "forgotten authorization");

    // After a revocation, the saved signature opens nothing either.
    let mut kept = app.ws();
    let reply = app.channel_auth(&alice, &kept.socket_id, &channel);
    let saved = reply.json();
    kept.subscribe_with(&channel, &saved);
    let started = Instant::now();
    let removed = app.on(
        &owner,
        "acme",
        "DELETE",
        &format!("/api/members/{alice_id}"),
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    expect_revoked(&mut kept, &channel, started, "removed member");
    refused(&mut kept, &saved, "signature replayed after revocation");
    let created = app.on(
        &owner,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order("later", None)),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    kept.assert_nothing_pending();
    replayed.assert_nothing_pending();
    crowded.assert_nothing_pending();
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_member_of_one_company_gets_no_channel_of_another_however_it_is_named() {
    let app = spawn_app();
    app.create_tenant("a", &["a.test"]);
    app.create_tenant("b", &["b.test"]);
    let (a, b) = (tenant_id(&app, "a"), tenant_id(&app, "b"));
    // Alice belongs to A only; an admin of A, so no permission stands in her way.
    let (_, alice) = app.member("alice@a.test", "a", "admin");
    let (_, bart) = app.member("bart@b.test", "b", "admin");
    let b_chat = create_chat(&app, &bart, "b", "b's secrets", &[]);
    let a_chat = create_chat(&app, &alice, "a", "a's chat", &[]);
    assert_eq!(a_chat, b_chat, "the same id in both files");
    let (_, personal) = app.personal_token(&alice, "a only", "a");

    let vias = [
        Via::Plain,
        Via::Path("b"),
        Via::Path("a"),
        Via::Header("X-Tenant-Slug", "b".into()),
        Via::Header("X-Tenant-Slug", "a".into()),
        Via::Header("X-Tenant-Id", b.clone()),
        Via::Header("Host", "b.localhost".into()),
        Via::Header("Host", "b.test".into()),
        Via::Header("Host", "a.test".into()),
    ];
    let channels = [chat(&b, b_chat), orders(&b), presence(&b)];
    let mut ws = app.ws();
    for token in [&alice, &personal] {
        for via in &vias {
            for channel in &channels {
                let reply = via.send(&app, token, &ws.socket_id, channel);
                assert!(
                    matches!(reply.status, 403 | 404),
                    "{via:?} {channel}: {} {}",
                    reply.status,
                    reply.text()
                );
            }
        }
    }
    // The same names for A work, so the refusals above were about B.
    for channel in [chat(&a, a_chat), orders(&a), presence(&a)] {
        app.join_channel(&mut ws, &alice, &channel);
    }
}

// ---------------------------------------------------------------------------------------------
// The Pusher HTTP API.
// ---------------------------------------------------------------------------------------------

/// `POST /apps/{app_id}/events` with `body`, signed with `key`/`secret` at `timestamp`.
fn trigger(app: &TestApp, app_id: &str, body: &str, secret: &str, timestamp: u64) -> Reply {
    let (_, key, _) = app.app.realtime_credentials();
    let path = format!("/apps/{app_id}/events");
    let params = tenantd::realtime::sign_http_request(
        "POST",
        &path,
        &[],
        body.as_bytes(),
        &key,
        secret,
        timestamp,
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    app.call("POST", &format!("{path}?{query}"), &[], Some(body))
}

#[test]
fn the_http_events_api_publishes_signed_requests_only() {
    let app = spawn_app();
    let (app_id, _, secret) = app.app.realtime_credentials();
    let now = tenantd::catalog::unix_now() as u64;
    let mut ws = app.ws();
    let joined = ws.subscribe("announcements", None, None);
    assert_eq!(
        joined["event"], "pusher_internal:subscription_succeeded",
        "{joined}"
    );
    let body = json!({
        "name": "release",
        "channel": "announcements",
        "data": json!({"version": "1.0"}).to_string(),
    })
    .to_string();

    let reply = trigger(&app, &app_id, &body, &secret, now);
    assert_eq!(reply.status, 200, "signed: {}", reply.text());
    let frame = ws.recv_event("release", Some("announcements"));
    assert_eq!(frame_data(&frame), json!({"version": "1.0"}));

    let wrong_app = if app_id == "1" { "2" } else { "1" };
    for (what, reply, status) in [
        (
            "another secret",
            trigger(&app, &app_id, &body, "not-the-secret", now),
            401,
        ),
        (
            "another app id",
            trigger(&app, wrong_app, &body, &secret, now),
            404,
        ),
        (
            "a stale timestamp",
            trigger(&app, &app_id, &body, &secret, now - 3600),
            401,
        ),
        (
            "a future timestamp",
            trigger(&app, &app_id, &body, &secret, now + 3600),
            401,
        ),
    ] {
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
    }
    // A body changed after signing.
    let path = format!("/apps/{app_id}/events");
    let (_, key, _) = app.app.realtime_credentials();
    let params = tenantd::realtime::sign_http_request(
        "POST",
        &path,
        &[],
        body.as_bytes(),
        &key,
        &secret,
        now,
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let tampered = body.replace("1.0", "6.6");
    let reply = app.call("POST", &format!("{path}?{query}"), &[], Some(&tampered));
    assert_eq!(reply.status, 401, "tampered: {}", reply.text());
    // Signed but unusable bodies: 400, and 413 past Pusher's 10 KB of data (as the events
    // body parser documents).
    let no_channel = json!({"name": "release", "data": "{}"}).to_string();
    let reply = trigger(&app, &app_id, &no_channel, &secret, now);
    assert_eq!(reply.status, 400, "no channel: {}", reply.text());
    let huge =
        json!({"name": "release", "channel": "announcements", "data": "x".repeat(11 * 1024)})
            .to_string();
    let reply = trigger(&app, &app_id, &huge, &secret, now);
    assert_eq!(reply.status, 413, "too large: {}", reply.text());
    // Unsigned.
    let reply = app.call("POST", &path, &[], Some(&body));
    assert_eq!(reply.status, 401, "unsigned: {}", reply.text());
    ws.assert_nothing_pending();
}

// ---------------------------------------------------------------------------------------------
// The CLI.
// ---------------------------------------------------------------------------------------------

#[test]
fn realtime_credentials_json_matches_the_server() {
    let app = spawn_app();
    let out = app.cli(&["realtime", "credentials", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let (app_id, key, secret) = app.app.realtime_credentials();
    assert_eq!(
        printed,
        json!({"app_id": app_id, "key": key, "secret": secret})
    );
    // And the key printed is the one the socket endpoint takes (`ws()` connects with it).
    let mut ws = app.ws();
    ws.assert_nothing_pending();
}
