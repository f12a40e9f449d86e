//! The company workspace through the real server: who sees which orders (and which of their
//! fields) and which chats, tenant isolation of workspace ids, keyset pages while others write,
//! order numbers under concurrent creators, the status workflow, validation, message authorship,
//! and the data of `tenantd serve --demo`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, request_to, spawn_app, spawn_serve, Reply, TestApp};

const SIMPLE_FIELDS: [&str; 7] = [
    "id",
    "number",
    "title",
    "status",
    "assigned_to",
    "created_at",
    "updated_at",
];
const FULL_ONLY_FIELDS: [&str; 7] = [
    "customer_name",
    "customer_email",
    "customer_phone",
    "amount_minor",
    "currency",
    "notes",
    "created_by",
];
/// History events a simple view may see.
const SIMPLE_EVENTS: [&str; 4] = ["created", "title", "status", "assigned_to"];

/// Request headers in a table of cases.
type Headers<'a> = Vec<(&'a str, &'a str)>;
/// Field names in a table of cases.
type Fields = &'static [&'static str];

/// How a member sees an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Hidden,
    Simple,
    Full,
}
use View::{Full, Hidden, Simple};

impl View {
    fn keys(self) -> BTreeSet<String> {
        let fields: &[&str] = match self {
            Hidden => &[],
            Simple => &SIMPLE_FIELDS,
            Full => &[SIMPLE_FIELDS, FULL_ONLY_FIELDS].concat(),
        };
        fields.iter().map(|f| f.to_string()).collect()
    }

    /// What reading an order in this view answers.
    fn read_status(self) -> u16 {
        if self == Hidden {
            404
        } else {
            200
        }
    }

    /// What a write on an order in this view answers: a hidden order is missing, a visible one
    /// without the permission is refused.
    fn write_status(self, allowed: bool) -> u16 {
        match (self, allowed) {
            (Hidden, _) => 404,
            (_, false) => 403,
            (_, true) => 200,
        }
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

fn names(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {value}"))
}

/// `ORD-000042` to 42.
fn number_of(order: &Value) -> i64 {
    order["number"]
        .as_str()
        .and_then(|n| n.strip_prefix("ORD-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no order number in {order}"))
}

/// The fields of a validation error.
fn invalid_fields(what: &str, reply: &Reply) -> BTreeSet<String> {
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (422, "validation_failed"),
        "{what}: {}",
        reply.text()
    );
    keys(&reply.json()["error"]["fields"])
}

fn new_order(title: &str) -> Value {
    json!({
        "title": title,
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "customer_phone": "+1 555 0100",
        "amount_minor": 12_500,
        "currency": "EUR",
        "notes": "fragile",
    })
}

fn create_order(app: &TestApp, token: &str, slug: &str, body: Value) -> Value {
    let reply = app.on(token, slug, "POST", "/api/orders", Some(body));
    assert_eq!(reply.status, 201, "create order: {}", reply.text());
    reply.json()
}

fn create_chat(app: &TestApp, token: &str, slug: &str, title: &str, others: &[i64]) -> i64 {
    let body = json!({"title": title, "kind": "group", "participant_ids": others});
    let reply = app.on(token, slug, "POST", "/api/chats", Some(body));
    assert_eq!(reply.status, 201, "create chat: {}", reply.text());
    id_of(&reply.json())
}

fn post_message(app: &TestApp, token: &str, slug: &str, chat: i64, body: &str) -> i64 {
    let path = format!("/api/chats/{chat}/messages");
    let reply = app.on(token, slug, "POST", &path, Some(json!({ "body": body })));
    assert_eq!(reply.status, 201, "post message: {}", reply.text());
    id_of(&reply.json())
}

/// Every row of a keyset-paginated list, following `next` page by page. `get` answers a path;
/// `list` names the array in the answer and `param` the parameter that takes `next`.
fn all_pages(get: impl Fn(&str) -> Reply, base: &str, list: &str, param: &str) -> Vec<Value> {
    let limit: usize = base
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("limit="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let mut rows = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..1000 {
        let path = match &next {
            Some(n) => format!("{base}&{param}={n}"),
            None => base.to_string(),
        };
        let reply = get(&path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let page = reply.json();
        let items = page[list].as_array().expect("a list").clone();
        assert!(items.len() <= limit, "{path}: {} rows", items.len());
        next = match &page["next"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => panic!("odd next {other}"),
        };
        if next.is_some() {
            assert_eq!(items.len(), limit, "{path}: a short page before the last");
        }
        rows.extend(items);
        if next.is_none() {
            return rows;
        }
    }
    panic!("{base}: paging did not end");
}

fn orders_of(app: &TestApp, token: &str, slug: &str, query: &str) -> Vec<Value> {
    all_pages(
        |path| app.on(token, slug, "GET", path, None),
        &format!("/api/orders?limit=100&{query}"),
        "orders",
        "cursor",
    )
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(id_of).collect()
}

/// Sets a flag when dropped, panics included: stops a writer thread.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

/// One member of the matrix: a role and what it should grant.
struct Case {
    role: &'static str,
    /// The permissions of a custom role made for the case; `None` for a built-in role.
    custom: Option<&'static [&'static str]>,
    /// How the member sees orders they created or are assigned to.
    own: View,
    /// How the member sees everyone else's orders.
    other: View,
    /// Order writes granted: words among `create`, `edit`, `delete`.
    writes: &'static str,
    /// Chat rights: words among `view_all`, `create`.
    chats: &'static str,
}

fn matrix() -> Vec<Case> {
    let c = |role, custom, own, other, writes, chats| Case {
        role,
        custom,
        own,
        other,
        writes,
        chats,
    };
    #[rustfmt::skip]
    let cases = vec![
        c("view", Some(&["orders_view"][..]), Full, Hidden, "", ""),
        c("view-all", Some(&["orders_view_all"]), Full, Full, "", ""),
        c("simple", Some(&["orders_simple_view"]), Simple, Hidden, "", ""),
        c("simple-all", Some(&["orders_simple_view_all"]), Simple, Simple, "", ""),
        c("view-simple", Some(&["orders_view", "orders_simple_view"]), Full, Hidden, "", ""),
        c("view-simple-all", Some(&["orders_view", "orders_simple_view_all"]), Full, Simple, "", ""),
        c("simple-view-all", Some(&["orders_simple_view", "orders_view_all"]), Full, Full, "", ""),
        c("simple-all-edit", Some(&["orders_simple_view_all", "orders_edit"]), Simple, Simple, "edit", ""),
        c("view-delete", Some(&["orders_view", "orders_delete"]), Full, Hidden, "delete", ""),
        c("create-only", Some(&["orders_create"]), Hidden, Hidden, "create", ""),
        c("nothing", Some(&[]), Hidden, Hidden, "", ""),
        c("chats-view-all", Some(&["chats_view_all"]), Hidden, Hidden, "", "view_all"),
        c("chats-create", Some(&["chats_create"]), Hidden, Hidden, "", "create"),
        c("admin", None, Full, Full, "create edit delete", "view_all create"),
        c("manager", None, Full, Full, "create edit", "view_all create"),
        c("agent", None, Full, Hidden, "create edit", "create"),
        c("viewer", None, Simple, Simple, "", ""),
    ];
    cases
}

/// An order as the test knows it: who made it and who it is assigned to.
#[derive(Clone, Copy)]
struct Known {
    created_by: i64,
    assigned_to: Option<i64>,
    customer: &'static str,
    /// The title it was created with.
    title: &'static str,
}

#[test]
fn permission_matrix_for_orders_and_chats() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let cases = matrix();
    for case in &cases {
        if let Some(permissions) = case.custom {
            app.create_role("acme", case.role, permissions);
        }
    }
    let members: Vec<(i64, String)> = cases
        .iter()
        .map(|case| app.member(&format!("{}@acme.test", case.role), "acme", case.role))
        .collect();
    let member_ids: Vec<i64> = members.iter().map(|(id, _)| *id).collect();

    // Orders: one of the owner's that nobody else owns, and one assigned to each member. Each has
    // a change of customer name in its history, an event only full views may see.
    let mut orders: BTreeMap<i64, Known> = BTreeMap::new();
    let mut order_for = |assigned_to: Option<i64>, title: &'static str| {
        let mut body = new_order(title);
        body["assigned_to"] = json!(assigned_to);
        let id = id_of(&create_order(&app, &owner, "acme", body));
        let path = format!("/api/orders/{id}");
        let renamed = json!({"customer_name": "Grace Hopper"});
        assert_eq!(
            app.on(&owner, "acme", "PATCH", &path, Some(renamed)).status,
            200
        );
        orders.insert(
            id,
            Known {
                created_by: app.owner_id,
                assigned_to,
                customer: "Grace Hopper",
                title,
            },
        );
        id
    };
    let shared = order_for(None, "the owner's");
    let own_orders: Vec<i64> = member_ids
        .iter()
        .map(|&id| order_for(Some(id), "assigned"))
        .collect();

    // Chats: one with every member, and one of the owner's alone.
    let everyone = create_chat(&app, &owner, "acme", "everyone", &member_ids);
    let private = create_chat(&app, &owner, "acme", "private", &[]);
    let mut chats: Vec<(i64, BTreeSet<i64>)> = vec![
        (everyone, set(&[&[app.owner_id], &member_ids[..]].concat())),
        (private, set(&[app.owner_id])),
    ];

    for ((case, (me, token)), own_order) in cases.iter().zip(&members).zip(own_orders) {
        let me = *me;
        let role = case.role;
        let can = |what: &str| case.writes.split(' ').any(|w| w == what);
        let view_of = |orders: &BTreeMap<i64, Known>, id: i64| {
            let known = orders[&id];
            if known.created_by == me || known.assigned_to == Some(me) {
                case.own
            } else {
                case.other
            }
        };
        let victim = id_of(&create_order(&app, &owner, "acme", new_order("victim")));
        orders.insert(
            victim,
            Known {
                created_by: app.owner_id,
                assigned_to: None,
                customer: "Ada Lovelace",
                title: "victim",
            },
        );
        let call = |method: &str, path: &str, body: Option<Value>| {
            app.on(token, "acme", method, path, body)
        };

        // Create: answered as the creator now sees the order, or only its id and number.
        let reply = call("POST", "/api/orders", Some(new_order("made by a member")));
        assert_eq!(
            reply.status,
            if can("create") { 201 } else { 403 },
            "{role} create"
        );
        if reply.status == 201 {
            let made = reply.json();
            let want = match case.own {
                Hidden => names(&["id", "number"]),
                view => view.keys(),
            };
            assert_eq!(keys(&made), want, "{role} create answer");
            orders.insert(
                id_of(&made),
                Known {
                    created_by: me,
                    assigned_to: None,
                    customer: "Ada Lovelace",
                    title: "made by a member",
                },
            );
        }

        // List: exactly the orders in scope, each with exactly the fields of its view.
        let reply = call("GET", "/api/orders?limit=100", None);
        if case.own == Hidden && case.other == Hidden {
            assert_eq!(
                (reply.status, reply.error_code().as_str()),
                (403, "forbidden"),
                "{role} list"
            );
        } else {
            assert_eq!(reply.status, 200, "{role} list: {}", reply.text());
            let page = reply.json();
            assert!(page["next"].is_null(), "{role}: one page");
            let listed: BTreeMap<i64, BTreeSet<String>> = page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| (id_of(o), keys(o)))
                .collect();
            let want: BTreeMap<i64, BTreeSet<String>> = orders
                .keys()
                .map(|&id| (id, view_of(&orders, id)))
                .filter(|(_, view)| *view != Hidden)
                .map(|(id, view)| (id, view.keys()))
                .collect();
            assert_eq!(listed, want, "{role} list");
            // Small pages hold the same orders, every page but the last full.
            let paged = all_pages(
                |path| call("GET", path, None),
                "/api/orders?limit=3",
                "orders",
                "cursor",
            );
            assert_eq!(
                set(&ids(&paged)),
                want.keys().copied().collect(),
                "{role} pages"
            );

            // Search: titles wherever the order is seen, customer names only in full views.
            let found = |q: &str| -> BTreeSet<i64> {
                let reply = call("GET", &format!("/api/orders?limit=100&q={q}"), None);
                assert_eq!(reply.status, 200, "{role} search {q}");
                ids(reply.json()["orders"].as_array().unwrap())
                    .into_iter()
                    .collect()
            };
            let want: BTreeSet<i64> = orders
                .iter()
                .filter(|(&id, _)| view_of(&orders, id) == Full)
                .filter(|(_, known)| known.customer == "Ada Lovelace")
                .map(|(&id, _)| id)
                .collect();
            assert_eq!(found("Lovelace"), want, "{role} search by customer");
            // Titles of victims are never changed.
            let want: BTreeSet<i64> = orders
                .iter()
                .filter(|(&id, _)| view_of(&orders, id) != Hidden)
                .filter(|(_, known)| known.title == "victim")
                .map(|(&id, _)| id)
                .collect();
            assert_eq!(found("victim"), want, "{role} search by title");
        }

        for (what, id) in [("own", own_order), ("other", shared)] {
            let view = view_of(&orders, id);
            let path = format!("/api/orders/{id}");

            let reply = call("GET", &path, None);
            assert_eq!(reply.status, view.read_status(), "{role} get {what}");
            if reply.status == 200 {
                assert_eq!(keys(&reply.json()), view.keys(), "{role} get {what}");
            } else {
                // Exactly the answer about an order that does not exist.
                let missing = call("GET", "/api/orders/999999", None);
                assert_eq!((reply.status, &reply.body), (missing.status, &missing.body));
            }

            let reply = call("GET", &format!("{path}/history"), None);
            assert_eq!(reply.status, view.read_status(), "{role} history of {what}");
            if reply.status == 200 {
                let fields: BTreeSet<String> = reply.json()["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["field"].as_str().unwrap().to_string())
                    .collect();
                assert!(
                    fields.contains("created"),
                    "{role} history of {what}: {fields:?}"
                );
                let simple_only = fields.iter().all(|f| SIMPLE_EVENTS.contains(&f.as_str()));
                assert_eq!(
                    simple_only,
                    view == Simple,
                    "{role} history of {what}: {fields:?}"
                );
            }

            let title = format!("{what} renamed by {role}");
            let reply = call("PATCH", &path, Some(json!({ "title": title })));
            assert_eq!(
                reply.status,
                view.write_status(can("edit")),
                "{role} patch {what}"
            );
            if reply.status == 200 {
                let order = reply.json();
                assert_eq!(keys(&order), view.keys(), "{role} patch {what}");
                assert_eq!(order["title"], title.as_str());
            }

            // Customer, amount, currency and notes need the full view of the order.
            let reply = call("PATCH", &path, Some(json!({"amount_minor": 99})));
            let want = match view.write_status(can("edit")) {
                200 if view == Simple => 403,
                status => status,
            };
            assert_eq!(reply.status, want, "{role} patch amount of {what}");
        }

        // Delete someone else's order, then the member's own.
        for (what, id) in [("other", victim), ("own", own_order)] {
            let view = view_of(&orders, id);
            let path = format!("/api/orders/{id}");
            let reply = call("DELETE", &path, None);
            assert_eq!(
                reply.status,
                view.write_status(can("delete")),
                "{role} delete {what}"
            );
            let after = app.on(&owner, "acme", "GET", &path, None).status;
            if reply.status == 200 {
                orders.remove(&id);
                assert_eq!(after, 404, "{role} deleted {what}");
            } else {
                assert_eq!(after, 200, "{role} refused to delete {what}");
            }
        }

        // Chats: participants see their chats, `chats_view_all` every one; only participants
        // post; `chats_create` creates.
        let sees_all = case.chats.contains("view_all");
        let reply = call("GET", "/api/chats", None);
        assert_eq!(reply.status, 200, "{role} chats");
        let listed: BTreeMap<i64, bool> = reply.json()["chats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (id_of(c), c["participant"].as_bool().unwrap()))
            .collect();
        let want: BTreeMap<i64, bool> = chats
            .iter()
            .filter(|(_, people)| sees_all || people.contains(&me))
            .map(|(id, people)| (*id, people.contains(&me)))
            .collect();
        assert_eq!(listed, want, "{role} chats");

        let reply = call("GET", &format!("/api/chats/{private}"), None);
        assert_eq!(
            reply.status,
            if sees_all { 200 } else { 404 },
            "{role} private chat"
        );
        let reply = call("GET", &format!("/api/chats/{private}/messages"), None);
        assert_eq!(
            reply.status,
            if sees_all { 200 } else { 404 },
            "{role} private messages"
        );
        let reply = call("GET", &format!("/api/chats/{everyone}"), None);
        assert_eq!(reply.status, 200, "{role} own chat");
        assert_eq!(reply.json()["participant"], true);

        let hello = Some(json!({"body": format!("hello from {role}")}));
        let reply = call(
            "POST",
            &format!("/api/chats/{everyone}/messages"),
            hello.clone(),
        );
        assert_eq!(reply.status, 201, "{role} posts in own chat");
        let reply = call("POST", &format!("/api/chats/{private}/messages"), hello);
        assert_eq!(
            reply.status,
            if sees_all { 403 } else { 404 },
            "{role} posts elsewhere"
        );

        let body = json!({"title": format!("{role}'s"), "kind": "group", "participant_ids": []});
        let reply = call("POST", "/api/chats", Some(body));
        let creates = case.chats.contains("create");
        assert_eq!(
            reply.status,
            if creates { 201 } else { 403 },
            "{role} creates a chat"
        );
        if reply.status == 201 {
            chats.push((id_of(&reply.json()), set(&[me])));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation
// ---------------------------------------------------------------------------------------------

/// The workspace routes, with `{id}`, `{mid}` and `{user_id}` to fill.
fn workspace_routes(app: &TestApp) -> Vec<(String, String)> {
    app.app
        .route_table()
        .into_iter()
        .filter(|(_, path, tenant)| {
            *tenant && (path.starts_with("/api/chats") || path.starts_with("/api/orders"))
        })
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// A route's path with the ids of one tenant's objects.
fn fill(path: &str, chat: i64, message: i64, order: i64, user: i64) -> String {
    let id = if path.starts_with("/api/orders") {
        order
    } else {
        chat
    };
    path.replace("{id}", &id.to_string())
        .replace("{mid}", &message.to_string())
        .replace("{user_id}", &user.to_string())
}

/// A body every workspace write accepts the shape of.
fn any_body(method: &str, message: i64, user: i64) -> Option<Value> {
    matches!(method, "POST" | "PATCH").then(|| {
        let mut body = new_order("hijacked");
        body["body"] = json!("hijacked");
        body["kind"] = json!("group");
        body["user_id"] = json!(user);
        body["message_id"] = json!(message);
        body
    })
}

/// What a tenant's workspace holds, as its admin reads it.
fn snapshot(app: &TestApp, slug: &str) -> Value {
    let owner = &app.owner_token;
    let chats = app.on(owner, slug, "GET", "/api/chats", None).json()["chats"].clone();
    let mut messages = Vec::new();
    let mut participants = Vec::new();
    for chat in chats.as_array().unwrap() {
        let id = id_of(chat);
        let path = format!("/api/chats/{id}/messages?limit=100");
        messages.push(app.on(owner, slug, "GET", &path, None).json());
        let path = format!("/api/chats/{id}/participants");
        participants.push(app.on(owner, slug, "GET", &path, None).json());
    }
    let orders = orders_of(app, owner, slug, "");
    let history: Vec<Value> = ids(&orders)
        .iter()
        .map(|id| {
            let path = format!("/api/orders/{id}/history");
            app.on(owner, slug, "GET", &path, None).json()
        })
        .collect();
    json!({"chats": chats, "messages": messages, "participants": participants,
           "orders": orders, "history": history})
}

#[test]
fn ids_of_one_tenant_name_nothing_in_another() {
    let app = spawn_app();
    app.create_tenant("acme", &["acme.test"]);
    let globex = app.create_tenant("globex", &["globex.test"]);
    let owner = app.owner_token.clone();
    let colleague = app.user("colleague@example.test", "colleague-password-1");
    app.join(colleague, "acme", "agent");
    app.join(colleague, "globex", "agent");

    // globex gets one of each and acme three, so acme's third ids exist in acme only.
    let mut last = BTreeMap::new();
    for (slug, count) in [("globex", 1), ("acme", 3)] {
        for i in 0..count {
            let chat = create_chat(&app, &owner, slug, &format!("chat {i}"), &[colleague]);
            let message = post_message(&app, &owner, slug, chat, "hello");
            let order = id_of(&create_order(&app, &owner, slug, new_order("order")));
            last.insert(slug, (chat, message, order));
        }
    }
    let (chat, message, order) = last["acme"];
    assert_eq!((chat, message, order), (3, 3, 3));
    let routes = workspace_routes(&app);
    let with_id: Vec<&(String, String)> =
        routes.iter().filter(|(_, p)| p.contains("{id}")).collect();
    assert_eq!(with_id.len(), 17, "{with_id:?}");

    let acme_before = snapshot(&app, "acme");
    let globex_before = snapshot(&app, "globex");
    for (method, pattern) in &with_id {
        let path = fill(pattern, chat, message, order, colleague);
        // Reads first, so that the writes below cannot explain a 404.
        if method == "GET" {
            let reply = app.on(&owner, "acme", method, &path, None);
            assert_eq!(
                reply.status,
                200,
                "{method} {path} on acme: {}",
                reply.text()
            );
        }
        let body = any_body(method, message, colleague);
        let reply = app.on(&owner, "globex", method, &path, body);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (404, "not_found"),
            "{method} {pattern} with acme's ids on globex"
        );
    }
    assert_eq!(snapshot(&app, "acme"), acme_before);
    assert_eq!(snapshot(&app, "globex"), globex_before);

    // A member of acme only, aiming at globex (at its real ids) with every way of naming it; and
    // the owner, admin of both, with a personal token made for acme only.
    let (_, outsider) = app.member("outsider@acme.test", "acme", "admin");
    let (_, acme_token) = app.personal_token(&owner, "acme only", "acme");
    let globex_id = globex["id"].as_str().unwrap().to_string();
    let (g_chat, g_message, g_order) = last["globex"];
    #[rustfmt::skip]
    let aims: Vec<(&str, &str, Headers, Headers)> = vec![
        ("path prefix", "/t/globex", vec![], vec![]),
        ("slug header", "", vec![("X-Tenant-Slug", "globex")], vec![("X-Tenant-Slug", "acme")]),
        ("id header", "", vec![("X-Tenant-ID", &globex_id)], vec![]),
        ("custom domain", "", vec![("Host", "globex.test")], vec![("Host", "acme.test")]),
        ("subdomain", "", vec![("Host", "globex.localhost")], vec![("Host", "acme.localhost")]),
    ];
    for ((how, prefix, headers, control), token) in aims
        .iter()
        .flat_map(|aim| [(aim, &outsider), (aim, &acme_token)])
    {
        if !control.is_empty() {
            // The same way of naming a tenant works for acme, with the same token.
            let reply = app.as_bearer(token, "GET", "/api/orders", control, None);
            assert_eq!(reply.status, 200, "{how} to acme: {}", reply.text());
        }
        for (method, pattern) in &routes {
            let path = format!(
                "{prefix}{}",
                fill(pattern, g_chat, g_message, g_order, colleague)
            );
            let body = any_body(method, g_message, colleague);
            let reply = app.as_bearer(token, method, &path, headers, body);
            assert!(
                !(200..300).contains(&reply.status),
                "{how}: {method} {path} answered {}",
                reply.status
            );
            assert_eq!(
                (reply.status, reply.error_code().as_str()),
                (403, "not_a_member"),
                "{how}: {method} {path}"
            );
        }
    }
    assert_eq!(snapshot(&app, "globex"), globex_before);
}

// ---------------------------------------------------------------------------------------------
// Pagination and numbering under concurrency
// ---------------------------------------------------------------------------------------------

/// The sort key of an order as a comparable pair with its id.
fn sort_key(order: &Value, sort: &str) -> (String, i64) {
    let column = sort.trim_start_matches('-');
    let key = match column {
        "number" => format!("{:020}", number_of(order)),
        _ => order[column].as_str().unwrap().to_string(),
    };
    (key, id_of(order))
}

#[test]
fn order_pages_return_every_row_once_while_orders_are_created() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let seeded: Vec<i64> = (0..40)
        .map(|i| {
            id_of(&create_order(
                &app,
                &owner,
                "acme",
                new_order(&format!("seed {i}")),
            ))
        })
        .collect();
    let created: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut interleaved = 0;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            for i in 0..1000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let order = create_order(&app, &owner, "acme", new_order(&format!("new {i}")));
                created.lock().unwrap().push(id_of(&order));
            }
        });
        assert!(eventually(Duration::from_secs(5), || !created
            .lock()
            .unwrap()
            .is_empty()));
        let sorts = [
            "-created_at",
            "created_at",
            "number",
            "-number",
            "updated_at",
            "-updated_at",
        ];
        for sort in sorts {
            let (known, writes_before) = {
                let created = created.lock().unwrap();
                let known: BTreeSet<i64> = seeded.iter().chain(created.iter()).copied().collect();
                (known, created.len())
            };
            let rows = all_pages(
                |path| app.on(&owner, "acme", "GET", path, None),
                &format!("/api/orders?limit=7&sort={sort}"),
                "orders",
                "cursor",
            );
            interleaved += created.lock().unwrap().len() - writes_before;
            let seen = ids(&rows);
            let unique: BTreeSet<i64> = seen.iter().copied().collect();
            assert_eq!(unique.len(), seen.len(), "{sort}: a row came twice");
            let missing: Vec<&i64> = known.difference(&unique).collect();
            assert!(missing.is_empty(), "{sort}: rows {missing:?} never came");
            let keys: Vec<(String, i64)> = rows.iter().map(|o| sort_key(o, sort)).collect();
            for pair in keys.windows(2) {
                let in_order = if sort.starts_with('-') {
                    pair[0] > pair[1]
                } else {
                    pair[0] < pair[1]
                };
                assert!(in_order, "{sort}: {:?} then {:?}", pair[0], pair[1]);
            }
        }
    });
    assert!(
        interleaved > 0,
        "no order was created while pages were read"
    );
    // Once quiet, one pass sees every order.
    let all: BTreeSet<i64> = seeded
        .iter()
        .chain(created.lock().unwrap().iter())
        .copied()
        .collect();
    let listed = ids(&orders_of(&app, &owner, "acme", ""));
    assert_eq!(listed.len(), all.len());
    assert_eq!(set(&listed), all);
}

#[test]
fn message_pages_return_every_message_once_while_others_post() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let (poster, poster_token) = app.member("poster@acme.test", "acme", "agent");
    let chat = create_chat(&app, &owner, "acme", "busy", &[poster]);
    let seeded: Vec<i64> = (0..40)
        .map(|i| post_message(&app, &owner, "acme", chat, &format!("seed {i}")))
        .collect();
    let posted: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut interleaved = 0;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            for i in 0..1000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = post_message(&app, &poster_token, "acme", chat, &format!("new {i}"));
                posted.lock().unwrap().push(id);
            }
        });
        assert!(eventually(Duration::from_secs(5), || !posted
            .lock()
            .unwrap()
            .is_empty()));
        for limit in [1, 6, 13] {
            let (known, writes_before) = {
                let posted = posted.lock().unwrap();
                let known: BTreeSet<i64> = seeded.iter().chain(posted.iter()).copied().collect();
                (known, posted.len())
            };
            let rows = all_pages(
                |path| app.on(&owner, "acme", "GET", path, None),
                &format!("/api/chats/{chat}/messages?limit={limit}"),
                "messages",
                "before",
            );
            interleaved += posted.lock().unwrap().len() - writes_before;
            let seen = ids(&rows);
            assert!(
                seen.windows(2).all(|w| w[0] > w[1]),
                "limit {limit}: not strictly newest first"
            );
            let unique = set(&seen);
            let missing: Vec<&i64> = known.difference(&unique).collect();
            assert!(missing.is_empty(), "limit {limit}: {missing:?} never came");
            // Messages of the first page on are older than it: none posted later shows up.
            let first = seen[0];
            assert!(seen.iter().all(|&id| id <= first));
        }
    });
    assert!(
        interleaved > 0,
        "no message was posted while pages were read"
    );
}

#[test]
fn sixteen_concurrent_creators_get_every_number_once() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let per_creator = 5;
    let numbers: Vec<i64> = std::thread::scope(|s| {
        let creators: Vec<_> = (0..16)
            .map(|c| {
                let (app, owner) = (&app, &owner);
                s.spawn(move || {
                    (0..per_creator)
                        .map(|i| {
                            let title = format!("creator {c} order {i}");
                            number_of(&create_order(app, owner, "acme", new_order(&title)))
                        })
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        creators
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = 16 * per_creator;
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=total).collect::<Vec<i64>>(),
        "duplicates or gaps"
    );
    // The stored orders agree, one number each.
    let listed = orders_of(&app, &owner, "acme", "sort=number");
    let stored: Vec<i64> = listed.iter().map(number_of).collect();
    assert_eq!(stored, (1..=total).collect::<Vec<i64>>());
    // A deleted order's number is never handed out again.
    let last = listed.last().unwrap();
    let path = format!("/api/orders/{}", id_of(last));
    assert_eq!(app.on(&owner, "acme", "DELETE", &path, None).status, 200);
    let next = create_order(&app, &owner, "acme", new_order("after a delete"));
    assert_eq!(number_of(&next), total + 1);
    assert_eq!(next["number"], format!("ORD-{:06}", total + 1));
}

// ---------------------------------------------------------------------------------------------
// Workflow and validation
// ---------------------------------------------------------------------------------------------

const STATUSES: [&str; 6] = [
    "new",
    "confirmed",
    "in_progress",
    "shipped",
    "delivered",
    "cancelled",
];

fn history(app: &TestApp, id: i64) -> Vec<Value> {
    let path = format!("/api/orders/{id}/history");
    let reply = app.on(&app.owner_token, "acme", "GET", &path, None);
    assert_eq!(reply.status, 200);
    reply.json()["history"].as_array().unwrap().clone()
}

#[test]
fn every_status_transition_over_http() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let allowed: BTreeSet<(&str, &str)> = set(&[
        ("new", "confirmed"),
        ("confirmed", "in_progress"),
        ("in_progress", "shipped"),
        ("shipped", "delivered"),
        ("new", "cancelled"),
        ("confirmed", "cancelled"),
        ("in_progress", "cancelled"),
        ("shipped", "cancelled"),
    ]);
    // The way from `new` to a status, one allowed step at a time.
    let way_to = |status: &str| -> Vec<&str> {
        match status {
            "cancelled" => vec!["cancelled"],
            _ => {
                let at = STATUSES.iter().position(|s| *s == status).unwrap();
                STATUSES[1..=at].to_vec()
            }
        }
    };
    for from in STATUSES {
        for to in STATUSES {
            let id = id_of(&create_order(&app, &owner, "acme", new_order("flow")));
            let path = format!("/api/orders/{id}");
            for step in way_to(from) {
                let reply = app.on(
                    &owner,
                    "acme",
                    "PATCH",
                    &path,
                    Some(json!({"status": step})),
                );
                assert_eq!(reply.status, 200, "on the way to {from}: {step}");
            }
            let events = history(&app, id).len();
            let reply = app.on(
                &owner,
                "acme",
                "PATCH",
                &path,
                Some(json!({ "status": to })),
            );
            let after = history(&app, id);
            let now = app.on(&owner, "acme", "GET", &path, None).json();
            if allowed.contains(&(from, to)) {
                assert_eq!(reply.status, 200, "{from} -> {to}: {}", reply.text());
                assert_eq!(reply.json()["status"], to);
                assert_eq!(now["status"], to);
                let event = after.last().unwrap();
                assert_eq!(
                    (&event["field"], &event["from_value"], &event["to_value"]),
                    (&json!("status"), &json!(from), &json!(to)),
                    "{from} -> {to}"
                );
                assert_eq!(after.len(), events + 1);
            } else if from == to {
                // Staying put is no transition and no change.
                assert_eq!(reply.status, 200, "{from} -> {to}: {}", reply.text());
                assert_eq!(after.len(), events, "{from} -> {to} wrote history");
            } else {
                assert_eq!(
                    invalid_fields(&format!("{from} -> {to}"), &reply),
                    names(&["status"])
                );
                assert_eq!(now["status"], from, "{from} -> {to} changed the order");
                assert_eq!(after.len(), events, "{from} -> {to} wrote history");
            }
        }
    }
}

#[test]
fn invalid_input_is_422_naming_every_field_and_writes_nothing() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let owner = app.owner_token.clone();
    let stranger = app.user("stranger@example.test", "stranger-password-1");
    let elsewhere = app.user("elsewhere@globex.test", "elsewhere-password-1");
    app.join(elsewhere, "globex", "agent");
    let chat = create_chat(&app, &owner, "acme", "room", &[]);
    let message = post_message(&app, &owner, "acme", chat, "original");
    let order = id_of(&create_order(&app, &owner, "acme", new_order("original")));
    let before = snapshot(&app, "acme");

    let with = |changes: Value| {
        let mut body = new_order("valid");
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let orders = "/api/orders".to_string();
    let the_order = format!("/api/orders/{order}");
    let chats = "/api/chats".to_string();
    let messages = format!("/api/chats/{chat}/messages");
    let the_message = format!("/api/chats/{chat}/messages/{message}");
    let too_long = "x".repeat(10_001);
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, String, Option<Value>, Fields)> = vec![
        ("empty title", "POST", orders.clone(), Some(with(json!({"title": ""}))), &["title"]),
        ("blank title", "POST", orders.clone(), Some(with(json!({"title": "   "}))), &["title"]),
        ("lower-case currency", "POST", orders.clone(), Some(with(json!({"currency": "eur"}))), &["currency"]),
        ("unknown currency", "POST", orders.clone(), Some(with(json!({"currency": "XYZ"}))), &["currency"]),
        ("negative amount", "POST", orders.clone(), Some(with(json!({"amount_minor": -1}))), &["amount_minor"]),
        ("bad email", "POST", orders.clone(), Some(with(json!({"customer_email": "ada@"}))), &["customer_email"]),
        ("empty currency", "POST", orders.clone(), Some(with(json!({"currency": ""}))), &["currency"]),
        ("assignee of no tenant", "POST", orders.clone(), Some(with(json!({"assigned_to": stranger}))), &["assigned_to"]),
        ("assignee of another tenant", "POST", orders.clone(), Some(with(json!({"assigned_to": elsewhere}))), &["assigned_to"]),
        ("assignee who does not exist", "POST", orders.clone(), Some(with(json!({"assigned_to": 999_999}))), &["assigned_to"]),
        ("everything at once", "POST", orders.clone(),
            Some(with(json!({"title": "", "customer_name": " ", "currency": "EU", "amount_minor": -5}))),
            &["amount_minor", "currency", "customer_name", "title"]),
        ("unknown status", "PATCH", the_order.clone(), Some(json!({"status": "lost"})), &["status"]),
        ("empty title on edit", "PATCH", the_order.clone(), Some(json!({"title": ""})), &["title"]),
        ("negative amount on edit", "PATCH", the_order.clone(), Some(json!({"amount_minor": -1})), &["amount_minor"]),
        ("bad currency on edit", "PATCH", the_order.clone(), Some(json!({"currency": "euro"})), &["currency"]),
        ("non-member assignee on edit", "PATCH", the_order.clone(), Some(json!({"assigned_to": elsewhere})), &["assigned_to"]),
        ("unknown status filter", "GET", format!("{orders}?status=lost"), None, &["status"]),
        ("zero limit", "GET", format!("{orders}?limit=0"), None, &["limit"]),
        ("limit over 100", "GET", format!("{orders}?limit=101"), None, &["limit"]),
        ("limit not a number", "GET", format!("{orders}?limit=ten"), None, &["limit"]),
        ("unknown sort", "GET", format!("{orders}?sort=price"), None, &["sort"]),
        ("forged cursor", "GET", format!("{orders}?cursor=zz"), None, &["cursor"]),
        ("empty message", "POST", messages.clone(), Some(json!({"body": ""})), &["body"]),
        ("blank message", "POST", messages.clone(), Some(json!({"body": " \n "})), &["body"]),
        ("10,001 characters", "POST", messages.clone(), Some(json!({ "body": too_long })), &["body"]),
        ("NUL in a message", "POST", messages.clone(), Some(json!({"body": "\u{0}hi"})), &["body"]),
        ("message not a string", "POST", messages.clone(), Some(json!({"body": 42})), &["body"]),
        ("empty edit", "PATCH", the_message.clone(), Some(json!({"body": ""})), &["body"]),
        ("10,001 characters on edit", "PATCH", the_message.clone(), Some(json!({ "body": too_long })), &["body"]),
        ("NUL in an edit", "PATCH", the_message.clone(), Some(json!({"body": "a\u{0}"})), &["body"]),
        ("zero message limit", "GET", format!("{messages}?limit=0"), None, &["limit"]),
        ("before not a number", "GET", format!("{messages}?before=x"), None, &["before"]),
        ("empty chat title", "POST", chats.clone(), Some(json!({"title": "", "kind": "group"})), &["title"]),
        ("unknown chat kind", "POST", chats.clone(), Some(json!({"title": "t", "kind": "channel"})), &["kind"]),
        ("participant of no tenant", "POST", chats.clone(),
            Some(json!({"title": "t", "kind": "group", "participant_ids": [stranger]})), &["participant_ids"]),
        ("participant of another tenant", "POST", chats.clone(),
            Some(json!({"title": "t", "kind": "group", "participant_ids": [elsewhere]})), &["participant_ids"]),
        ("direct chat with nobody", "POST", chats.clone(),
            Some(json!({"title": "t", "kind": "direct", "participant_ids": []})), &["participant_ids"]),
        ("adding a non-member", "POST", format!("/api/chats/{chat}/participants"),
            Some(json!({ "user_id": elsewhere })), &["user_id"]),
        ("empty chat title on edit", "PATCH", format!("/api/chats/{chat}"), Some(json!({"title": ""})), &["title"]),
    ];
    for (name, method, path, body, fields) in cases {
        let reply = app.on(&owner, "acme", method, &path, body);
        assert_eq!(invalid_fields(name, &reply), names(fields), "{name}");
    }
    assert_eq!(
        snapshot(&app, "acme"),
        before,
        "a refused write changed something"
    );

    // The limits themselves are accepted, counted in characters, not bytes.
    let longest = "é".repeat(10_000);
    let id = post_message(&app, &owner, "acme", chat, &longest);
    let reply = app.on(&owner, "acme", "GET", &format!("{messages}?limit=1"), None);
    assert_eq!(reply.json()["messages"][0]["id"], id);
    assert_eq!(reply.json()["messages"][0]["body"], longest.as_str());
    let zero = create_order(&app, &owner, "acme", with(json!({"amount_minor": 0})));
    assert_eq!(zero["amount_minor"], 0);
}

#[test]
fn only_the_author_edits_or_deletes_a_message() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let (_, author) = app.member("author@acme.test", "acme", "agent");
    let (other_id, other) = app.member("other@acme.test", "acme", "agent");
    let chat = create_chat(&app, &author, "acme", "team", &[other_id, app.owner_id]);
    let message = post_message(&app, &author, "acme", chat, "mine");
    let path = format!("/api/chats/{chat}/messages/{message}");
    let listed = |token: &str| {
        let reply = app.on(
            token,
            "acme",
            "GET",
            &format!("/api/chats/{chat}/messages"),
            None,
        );
        reply.json()["messages"][0].clone()
    };

    // Another participant, and the tenant's admin, are refused.
    for (who, token) in [("another member", &other), ("the admin", &owner)] {
        let edit = app.on(
            token,
            "acme",
            "PATCH",
            &path,
            Some(json!({"body": "theirs"})),
        );
        assert_eq!(
            (edit.status, edit.error_code().as_str()),
            (403, "forbidden"),
            "{who} edits"
        );
        let delete = app.on(token, "acme", "DELETE", &path, None);
        assert_eq!(
            (delete.status, delete.error_code().as_str()),
            (403, "forbidden"),
            "{who} deletes"
        );
    }
    assert_eq!(listed(&other)["body"], "mine");
    assert!(listed(&other)["edited_at"].is_null());

    // The author can do both.
    let edit = app.on(
        &author,
        "acme",
        "PATCH",
        &path,
        Some(json!({"body": "mine, edited"})),
    );
    assert_eq!(edit.status, 200, "{}", edit.text());
    assert_eq!(edit.json()["body"], "mine, edited");
    assert!(edit.json()["edited_at"].is_string());
    assert_eq!(listed(&other)["body"], "mine, edited");
    assert_eq!(app.on(&author, "acme", "DELETE", &path, None).status, 200);
    let gone = listed(&other);
    assert_eq!(
        (gone["id"].as_i64(), gone["body"].as_str()),
        (Some(message), Some(""))
    );
    assert!(gone["deleted_at"].is_string());
    // A deleted message is no longer there to edit or delete.
    let edit = app.on(
        &author,
        "acme",
        "PATCH",
        &path,
        Some(json!({"body": "back"})),
    );
    assert_eq!(edit.status, 404);
    assert_eq!(app.on(&author, "acme", "DELETE", &path, None).status, 404);
}

#[test]
fn chats_count_unread_messages_and_manage_participants() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let (alice_id, alice) = app.member("alice@acme.test", "acme", "agent");
    let (bob_id, bob) = app.member("bob@acme.test", "acme", "agent");
    let (carol_id, carol) = app.member("carol@acme.test", "acme", "viewer");
    let chat = create_chat(&app, &alice, "acme", "team", &[bob_id]);
    let a: Vec<i64> = (1..=3)
        .map(|i| post_message(&app, &alice, "acme", chat, &format!("alice {i}")))
        .collect();
    let b = post_message(&app, &bob, "acme", chat, "bob 1");
    let summary = |token: &str| {
        let reply = app.on(token, "acme", "GET", "/api/chats", None);
        let chats = reply.json()["chats"].clone();
        chats
            .as_array()
            .unwrap()
            .iter()
            .find(|c| id_of(c) == chat)
            .cloned()
    };
    let bobs = summary(&bob).expect("bob sees the chat");
    assert_eq!(
        (
            bobs["unread_count"].as_i64(),
            bobs["participant_count"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(bobs["last_message"]["id"], b);
    assert_eq!(summary(&alice).unwrap()["unread_count"], 1);
    assert!(summary(&carol).is_none());

    // Read marks move forward only, and only to messages of the chat.
    let read = |token: &str, message: i64| {
        let path = format!("/api/chats/{chat}/read");
        app.on(
            token,
            "acme",
            "POST",
            &path,
            Some(json!({ "message_id": message })),
        )
    };
    assert_eq!(read(&bob, a[1]).json()["last_read_message_id"], a[1]);
    assert_eq!(summary(&bob).unwrap()["unread_count"], 1);
    assert_eq!(read(&bob, a[0]).json()["last_read_message_id"], a[1]);
    assert_eq!(read(&bob, 999_999).status, 404);

    // Participants: a manager adds; a member without chats_create cannot remove others, but
    // may leave.
    let path = format!("/api/chats/{chat}/participants");
    let added = app.on(
        &alice,
        "acme",
        "POST",
        &path,
        Some(json!({ "user_id": carol_id })),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(summary(&carol).unwrap()["unread_count"], 4);
    let people = app.on(&carol, "acme", "GET", &path, None).json()["participants"].clone();
    let people: BTreeSet<i64> = people
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_i64().unwrap())
        .collect();
    assert_eq!(people, set(&[alice_id, bob_id, carol_id]));
    let kick = app.on(&carol, "acme", "DELETE", &format!("{path}/{bob_id}"), None);
    assert_eq!(kick.status, 403);
    let leave = app.on(
        &carol,
        "acme",
        "DELETE",
        &format!("{path}/{carol_id}"),
        None,
    );
    assert_eq!(leave.status, 200);
    assert_eq!(
        app.on(&carol, "acme", "GET", &format!("/api/chats/{chat}"), None)
            .status,
        404
    );

    // An archived chat takes no messages until it is unarchived.
    let the_chat = format!("/api/chats/{chat}");
    let archived = app.on(
        &alice,
        "acme",
        "PATCH",
        &the_chat,
        Some(json!({"archived": true})),
    );
    assert!(
        archived.json()["archived_at"].is_string(),
        "{}",
        archived.text()
    );
    let refused = app.on(
        &bob,
        "acme",
        "POST",
        &format!("{the_chat}/messages"),
        Some(json!({"body": "hi"})),
    );
    assert_eq!(
        invalid_fields("post in an archived chat", &refused),
        names(&["chat_id"])
    );
    app.on(
        &alice,
        "acme",
        "PATCH",
        &the_chat,
        Some(json!({"archived": false})),
    );
    post_message(&app, &bob, "acme", chat, "back");

    // Deleting the newest message makes the one before it the last.
    let last = post_message(&app, &alice, "acme", chat, "oops");
    let path = format!("/api/chats/{chat}/messages/{last}");
    assert_eq!(app.on(&alice, "acme", "DELETE", &path, None).status, 200);
    assert_eq!(summary(&alice).unwrap()["last_message"]["body"], "back");

    // A direct chat has two people, for good.
    let body = json!({"title": "dm", "kind": "direct", "participant_ids": [bob_id]});
    let direct = id_of(
        &app.on(&alice, "acme", "POST", "/api/chats", Some(body))
            .json(),
    );
    let path = format!("/api/chats/{direct}/participants");
    let third = app.on(
        &alice,
        "acme",
        "POST",
        &path,
        Some(json!({ "user_id": carol_id })),
    );
    assert_eq!(
        invalid_fields("a third in a direct chat", &third),
        names(&["chat_id"])
    );
}

// ---------------------------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------------------------

/// Logs in to a `serve` process and reads acme's orders and chats as that user.
fn demo_view(addr: std::net::SocketAddr, email: &str) -> (Vec<Value>, Vec<Value>) {
    let login = json!({"email": email, "password": tenantd::demo::PASSWORD});
    let reply = request_to(addr, "POST", "/api/auth/login", &[], Some(&login));
    assert_eq!(reply.status, 200, "demo login: {}", reply.text());
    let auth = format!("Bearer {}", reply.json()["token"].as_str().unwrap());
    let headers = [("Authorization", auth.as_str()), ("Host", "acme.test")];
    let orders = all_pages(
        |path| request_to(addr, "GET", path, &headers, None),
        "/api/orders?limit=100&sort=number",
        "orders",
        "cursor",
    );
    let chats = request_to(addr, "GET", "/api/chats", &headers, None);
    assert_eq!(chats.status, 200);
    let chats = chats.json()["chats"].as_array().unwrap().clone();
    (orders, chats)
}

#[test]
fn serve_demo_seeds_once() {
    let data = tempfile::tempdir().unwrap();
    // Listening, data directory, the first admin's block (six lines), then the demo's two
    // lines and its accounts.
    let server = spawn_serve(data.path(), &["--demo"], 11);
    assert!(
        server.lines.iter().any(|l| l.contains("alice@acme.test")),
        "{:?}",
        server.lines
    );
    let (orders, chats) = demo_view(server.addr, "alice@acme.test");
    assert_eq!(orders.len(), tenantd::workspace::demo::DEMO_ORDERS);
    let statuses: BTreeSet<&str> = orders
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, set(&STATUSES), "every status is in the demo");
    assert!(chats.len() >= 2, "{chats:?}");
    assert!(chats.iter().any(|c| c["title"] == "General"));
    assert!(chats.iter().all(|c| c["last_message"].is_object()));
    // A viewer of acme sees the same orders, in the simple view.
    let (seen, _) = demo_view(server.addr, "vic@acme.test");
    assert_eq!(ids(&seen), ids(&orders));
    assert!(seen.iter().all(|o| keys(o) == Simple.keys()));
    drop(server);

    // Again on the same directory: nothing is added. (Listening, data directory, how to get
    // in as an admin, the demo's two lines, alice.)
    let server = spawn_serve(data.path(), &["--demo"], 6);
    assert!(
        server.lines.iter().any(|l| l.contains("alice@acme.test")),
        "{:?}",
        server.lines
    );
    let (again, chats_again) = demo_view(server.addr, "alice@acme.test");
    assert_eq!(ids(&again), ids(&orders));
    assert_eq!(ids(&chats_again), ids(&chats));
}

#[test]
fn a_failing_workspace_statement_is_a_500_not_an_unavailable_tenant() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let chat = create_chat(&app, &owner, "acme", "room", &[]);
    // A statement the schema refuses stands for a bug of ours: the tenant is fine, and a 503 would
    // tell clients to come back for the same failure.
    let file = app.tenant_file(acme["id"].as_str().unwrap());
    rusqlite::Connection::open(file)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
    let path = format!("/api/chats/{chat}/messages");
    let reply = app.on(&owner, "acme", "POST", &path, Some(json!({"body": "hi"})));
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (500, "internal_error")
    );
    assert_eq!(app.on(&owner, "acme", "GET", &path, None).status, 200);
}

/// Reads are answered from memory while the tenant's file is unchanged (`tenancy::reads`): every
/// way the answer can change must show on the very next read, and one reader's kept answer must
/// never reach another.
#[test]
fn kept_answers_follow_every_change_and_never_cross_readers() {
    let app = spawn_app();
    let tenant = app.create_tenant("acme", &[]);
    app.create_role(
        "acme",
        "own",
        &["orders_view", "orders_create", "orders_edit"],
    );
    app.create_role("acme", "simple_all", &["orders_simple_view_all"]);
    let (_, alice) = app.member("alice@example.com", "acme", "own");
    let (bob_id, bob) = app.member("bob@example.com", "acme", "simple_all");
    let (_, carol) = app.member("carol@example.com", "acme", "own");
    let order = create_order(&app, &alice, "acme", new_order("First"));
    let id = id_of(&order);
    let path = format!("/api/orders/{id}");
    let get = |token: &str| app.on(token, "acme", "GET", &path, None);
    let title = |token: &str| {
        let reply = get(token);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["title"].as_str().unwrap().to_string()
    };

    for _ in 0..3 {
        assert_eq!(title(&alice), "First");
    }
    let status = |reply: &Reply| reply.header("cache-status").unwrap_or_default().to_string();
    assert_eq!(status(&get(&alice)), "tenantd; hit");
    // A client may insist on a fresh read.
    let forced = app.as_bearer(
        &alice,
        "GET",
        &format!("/t/acme{path}"),
        &[("Cache-Control", "no-cache")],
        None,
    );
    assert_eq!(status(&forced), "tenantd; fwd=request");
    assert_eq!(forced.json()["title"], "First");
    // A write through the API.
    let reply = app.on(
        &alice,
        "acme",
        "PATCH",
        &path,
        Some(json!({"title": "Second"})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(status(&get(&alice)), "tenantd; fwd=miss");
    assert_eq!(title(&alice), "Second");
    assert_eq!(status(&get(&alice)), "tenantd; hit");

    // A write to the file from outside the server (an operator's `sqlite3`).
    let file = rusqlite::Connection::open(app.tenant_file(tenant["id"].as_str().unwrap())).unwrap();
    file.busy_timeout(Duration::from_secs(5)).unwrap();
    file.execute("UPDATE orders SET title = 'Third' WHERE id = ?1", [id])
        .unwrap();
    assert_eq!(title(&alice), "Third");

    // Others: their own scope and fields, whatever alice's answers were.
    assert_eq!(get(&carol).status, 404);
    assert_eq!(get(&carol).status, 404);
    for _ in 0..2 {
        let reply = get(&bob);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(keys(&reply.json()), View::Simple.keys());
    }
    // A role change lives in the catalog, not the file: it still counts at once.
    let owner = app.owner_token.clone();
    let reply = app.on(
        &owner,
        "acme",
        "PATCH",
        &format!("/api/members/{bob_id}"),
        Some(json!({"role": "own"})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(get(&bob).status, 404);

    // Pages too: a new order shows in the next page read.
    let list = |token: &str| ids(&orders_of(&app, token, "acme", ""));
    assert_eq!(list(&alice), vec![id]);
    assert_eq!(list(&alice), vec![id]);
    let second = id_of(&create_order(&app, &alice, "acme", new_order("Another")));
    let mut both = list(&alice);
    both.sort();
    assert_eq!(both, vec![id, second]);
    assert!(list(&carol).is_empty());
}
