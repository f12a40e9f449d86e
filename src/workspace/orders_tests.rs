use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::Value;

use super::orders::*;
use super::test_support::*;
use super::{seed_demo, Reader, WorkspaceError};
use crate::catalog::{check_email, EmailRule};
use crate::tenancy::Tenant;

fn writer(user_id: i64) -> Reader {
    reader(
        user_id,
        &[
            "orders_create",
            "orders_edit",
            "orders_delete",
            "orders_view",
        ],
    )
}

fn new_order(title: &str) -> NewOrder {
    NewOrder {
        title: title.into(),
        customer_name: "Ada Lovelace".into(),
        customer_email: Some("ada@example.com".into()),
        customer_phone: Some("+44 20 7946 0958".into()),
        amount_minor: 12_345,
        currency: Some("EUR".into()),
        assigned_to: None,
        notes: Some("fragile".into()),
    }
}

fn create(t: &Tenant, by: i64, title: &str, assigned_to: Option<i64>) -> i64 {
    let order = create_order(
        t,
        &writer(by),
        &NewOrder {
            assigned_to,
            ..new_order(title)
        },
        &is_member,
    )
    .unwrap();
    order["id"].as_i64().unwrap()
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap()
}

fn all_orders(t: &Tenant, r: &Reader, query: &OrderQuery) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = list_orders(
            t,
            r,
            &OrderQuery {
                cursor: cursor.clone(),
                ..query.clone()
            },
        )
        .unwrap();
        out.extend(page.items.iter().map(|o| serde_json::to_value(o).unwrap()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

fn patch() -> OrderPatch {
    OrderPatch::default()
}

fn status_patch(status: &str) -> OrderPatch {
    OrderPatch {
        status: Some(status.into()),
        ..patch()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Full,
    Simple,
}

fn simple_fields() -> BTreeSet<String> {
    SIMPLE_FIELDS.iter().map(|f| f.to_string()).collect()
}

fn full_fields() -> BTreeSet<String> {
    SIMPLE_FIELDS
        .iter()
        .chain(FULL_ONLY_FIELDS.iter())
        .map(|f| f.to_string())
        .collect()
}

fn seen(value: &Value) -> Seen {
    let keys: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    if keys == full_fields() {
        Seen::Full
    } else if keys == simple_fields() {
        Seen::Simple
    } else {
        panic!("unexpected field set {keys:?}")
    }
}

/// Order id → how it is seen; `None`: the list itself is refused.
type Expected = Option<Vec<(i64, Seen)>>;

#[test]
fn permission_matrix_for_list_and_get() {
    let t = tenant();
    let t = &t.tenant;
    // Seen from user 2: o2 is assigned to them, o4 created by them; o1 and
    // o3 are someone else's.
    let o1 = create(t, 1, "one", None);
    let o2 = create(t, 1, "two", Some(2));
    let o3 = create(t, 3, "three", Some(4));
    let o4 = create(t, 2, "four", None);
    use Seen::*;
    let own_full = vec![(o2, Full), (o4, Full)];
    let own_simple = vec![(o2, Simple), (o4, Simple)];
    let all_full = vec![(o1, Full), (o2, Full), (o3, Full), (o4, Full)];
    let all_simple = vec![(o1, Simple), (o2, Simple), (o3, Simple), (o4, Simple)];
    let cases: Vec<(&[&str], bool, Expected)> = vec![
        (&[], false, None),
        (
            &["orders_create", "orders_edit", "orders_delete"],
            false,
            None,
        ),
        (&["chats_view_all"], false, None),
        (&["orders_view"], false, Some(own_full.clone())),
        (&["orders_view_all"], false, Some(all_full.clone())),
        (&["orders_simple_view"], false, Some(own_simple.clone())),
        (&["orders_simple_view_all"], false, Some(all_simple.clone())),
        (
            &["orders_view", "orders_simple_view_all"],
            false,
            Some(vec![(o1, Simple), (o2, Full), (o3, Simple), (o4, Full)]),
        ),
        (
            &["orders_view", "orders_simple_view"],
            false,
            Some(own_full.clone()),
        ),
        (
            &["orders_simple_view", "orders_view_all"],
            false,
            Some(all_full.clone()),
        ),
        (
            &["orders_simple_view_all", "orders_view_all"],
            false,
            Some(all_full.clone()),
        ),
        (
            &["orders_simple_view", "orders_simple_view_all"],
            false,
            Some(all_simple),
        ),
        (&[], true, Some(all_full)),
    ];
    for (permissions, is_admin, expected) in cases {
        let r = Reader::new(2, permissions.iter().copied(), is_admin);
        let name = format!("{permissions:?} admin={is_admin}");
        let expected_map: BTreeMap<i64, Seen> =
            expected.clone().unwrap_or_default().into_iter().collect();

        match expected {
            None => assert_eq!(
                forbidden(list_orders(t, &r, &OrderQuery::default())),
                "orders_view",
                "{name}"
            ),
            Some(_) => {
                let listed: BTreeMap<i64, Seen> = all_orders(t, &r, &OrderQuery::default())
                    .iter()
                    .map(|v| (id_of(v), seen(v)))
                    .collect();
                assert_eq!(listed, expected_map, "{name}: list");
            }
        }
        for id in [o1, o2, o3, o4] {
            let got = get_order(t, &r, id);
            match expected_map.get(&id) {
                Some(view) => assert_eq!(seen(&got.unwrap()), *view, "{name}: get {id}"),
                None => assert!(is_not_found(&got), "{name}: get {id} must be NotFound"),
            }
            // History follows visibility.
            assert_eq!(
                is_not_found(&order_history(t, &r, id)),
                !expected_map.contains_key(&id),
                "{name}: history {id}"
            );
        }
        // Missing is NotFound, exactly like hidden.
        assert!(is_not_found(&get_order(t, &r, 999)), "{name}");
        assert!(is_not_found(&order_history(t, &r, 999)), "{name}");
    }
}

#[test]
fn shaped_values() {
    let t = tenant();
    let t = &t.tenant;
    let id = create(t, 1, "Oak desk", Some(2));
    let full = get_order(t, &writer(1), id).unwrap();
    assert_eq!(full["number"], "ORD-000001");
    assert_eq!(full["title"], "Oak desk");
    assert_eq!(full["status"], "new");
    assert_eq!(full["assigned_to"], 2);
    assert_eq!(full["created_by"], 1);
    assert_eq!(full["customer_name"], "Ada Lovelace");
    assert_eq!(full["customer_email"], "ada@example.com");
    assert_eq!(full["amount_minor"], 12_345);
    assert_eq!(full["currency"], "EUR");
    assert_eq!(full["notes"], "fragile");
    let simple = get_order(t, &reader(5, &["orders_simple_view_all"]), id).unwrap();
    assert_eq!(simple["title"], "Oak desk");
    assert!(simple.get("amount_minor").is_none());
    assert_eq!(format_order_number(1_234_567), "ORD-1234567");
    assert_eq!(parse_order_number("ORD-000012"), Some(12));
    assert_eq!(parse_order_number("ord-12"), Some(12));
    assert_eq!(parse_order_number(" 12 "), Some(12));
    for bad in [
        "",
        "ORD-",
        "ORD-x1",
        "-1",
        "0",
        "99999999999999999999",
        "ORD 12",
    ] {
        assert_eq!(parse_order_number(bad), None, "{bad}");
    }
}

#[test]
fn workflow_table() {
    let t = tenant();
    let t = &t.tenant;
    let boss = admin(9);
    // Every allowed (from, to); staying put is not a transition and is fine.
    let allowed: BTreeSet<(&str, &str)> = [
        ("new", "confirmed"),
        ("confirmed", "in_progress"),
        ("in_progress", "shipped"),
        ("shipped", "delivered"),
        ("new", "cancelled"),
        ("confirmed", "cancelled"),
        ("in_progress", "cancelled"),
        ("shipped", "cancelled"),
    ]
    .into_iter()
    .collect();
    let way_to = |status: OrderStatus| -> Vec<&'static str> {
        match status {
            OrderStatus::Cancelled => vec!["cancelled"],
            to => OrderStatus::ALL[1..=OrderStatus::ALL.iter().position(|s| *s == to).unwrap()]
                .iter()
                .map(|s| s.as_str())
                .collect(),
        }
    };
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            let id = create(t, 9, "flow", None);
            for step in way_to(from) {
                update_order(t, &boss, id, &status_patch(step), &is_member).unwrap();
            }
            let result = update_order(t, &boss, id, &status_patch(to.as_str()), &is_member);
            let pair = (from.as_str(), to.as_str());
            if allowed.contains(&pair) || from == to {
                assert_eq!(result.unwrap()["status"], to.as_str(), "{pair:?}");
            } else {
                let errors = validation(result);
                assert_eq!(errors.keys().collect::<Vec<_>>(), ["status"], "{pair:?}");
            }
            assert_eq!(
                from.can_become(to),
                allowed.contains(&pair),
                "can_become {pair:?}"
            );
        }
    }
    let id = create(t, 9, "flow", None);
    assert_eq!(
        validation(update_order(
            t,
            &boss,
            id,
            &status_patch("lost"),
            &is_member
        ))["status"],
        "unknown status"
    );
}

#[test]
fn validation_names_every_field() {
    let t = tenant();
    let t = &t.tenant;
    let me = writer(1);
    let bad = NewOrder {
        title: " ".into(),
        customer_name: String::new(),
        customer_email: Some("not-an-email".into()),
        customer_phone: Some("call me".into()),
        amount_minor: -1,
        currency: Some("eur".into()),
        assigned_to: Some(42),
        notes: Some("n".repeat(10_001)),
    };
    assert_eq!(
        fields(create_order(t, &me, &bad, &is_member)),
        [
            "amount_minor",
            "assigned_to",
            "currency",
            "customer_email",
            "customer_name",
            "customer_phone",
            "notes",
            "title"
        ]
    );
    for (currency, ok) in [
        ("EUR", true),
        ("JPY", true),
        ("XYZ", false),
        ("EU", false),
        ("EURO", false),
        ("€", false),
    ] {
        let order = NewOrder {
            currency: Some(currency.into()),
            ..new_order("c")
        };
        assert_eq!(
            create_order(t, &me, &order, &is_member).is_ok(),
            ok,
            "{currency}"
        );
    }
    for (email, ok) in [
        ("a@b.co", true),
        ("first.last+tag@sub.example.org", true),
        ("", true), // empty is none
        ("a@b", false),
        ("@b.co", false),
        ("a b@c.de", false),
        ("a@@b.co", false),
        ("a@-b.co", false),
        ("a@b..co", false),
    ] {
        let order = NewOrder {
            customer_email: Some(email.into()),
            ..new_order("e")
        };
        assert_eq!(
            create_order(t, &me, &order, &is_member).is_ok(),
            ok,
            "{email}"
        );
    }
    let order = NewOrder {
        amount_minor: MAX_AMOUNT_MINOR + 1,
        title: "t".repeat(201),
        ..new_order("")
    };
    assert_eq!(
        fields(create_order(t, &me, &order, &is_member)),
        ["amount_minor", "title"]
    );
    // Nothing was written by the failures, and no number was used up.
    let id = create(t, 1, "fine", None);
    assert_eq!(get_order(t, &me, id).unwrap()["number"], "ORD-000006");

    let p = OrderPatch {
        title: Some(String::new()),
        amount_minor: Some(-5),
        currency: Some("usd".into()),
        status: Some("shipped".into()),
        assigned_to: Some(Some(77)),
        customer_email: Some(Some("nope".into())),
        ..patch()
    };
    assert_eq!(
        fields(update_order(t, &me, id, &p, &is_member)),
        [
            "amount_minor",
            "assigned_to",
            "currency",
            "customer_email",
            "status",
            "title"
        ]
    );
    assert_eq!(
        forbidden(create_order(
            t,
            &reader(1, &["orders_view_all"]),
            &new_order("x"),
            &is_member
        )),
        "orders_create"
    );
}

#[test]
fn edit_and_delete_need_visibility_and_permission() {
    let t = tenant();
    let t = &t.tenant;
    let theirs = create(t, 1, "theirs", None);
    let mine = create(t, 2, "mine", None);

    // Cannot see it: NotFound, whatever the write permissions.
    let blind = reader(2, &["orders_edit", "orders_delete", "orders_view"]);
    assert!(is_not_found(&update_order(
        t,
        &blind,
        theirs,
        &status_patch("confirmed"),
        &is_member
    )));
    assert!(is_not_found(&delete_order(t, &blind, theirs)));

    // Sees it but lacks the permission.
    let viewer = reader(2, &["orders_view_all"]);
    assert_eq!(
        forbidden(update_order(
            t,
            &viewer,
            theirs,
            &status_patch("confirmed"),
            &is_member
        )),
        "orders_edit"
    );
    assert_eq!(forbidden(delete_order(t, &viewer, theirs)), "orders_delete");

    // A simple view edits the simple fields only.
    let simple_editor = reader(2, &["orders_edit", "orders_simple_view_all", "orders_view"]);
    let renamed = update_order(
        t,
        &simple_editor,
        theirs,
        &OrderPatch {
            title: Some("renamed".into()),
            status: Some("confirmed".into()),
            assigned_to: Some(Some(3)),
            ..patch()
        },
        &is_member,
    )
    .unwrap();
    assert_eq!(seen(&renamed), Seen::Simple);
    assert_eq!(renamed["title"], "renamed");
    for p in [
        OrderPatch {
            customer_name: Some("x".into()),
            ..patch()
        },
        OrderPatch {
            customer_email: Some(None),
            ..patch()
        },
        OrderPatch {
            customer_phone: Some(None),
            ..patch()
        },
        OrderPatch {
            amount_minor: Some(1),
            ..patch()
        },
        OrderPatch {
            currency: Some("USD".into()),
            ..patch()
        },
        OrderPatch {
            notes: Some(String::new()),
            ..patch()
        },
    ] {
        assert_eq!(
            forbidden(update_order(t, &simple_editor, theirs, &p, &is_member)),
            "orders_view_all",
            "{p:?}"
        );
    }
    // ... but the full fields of their own orders.
    let own = update_order(
        t,
        &simple_editor,
        mine,
        &OrderPatch {
            amount_minor: Some(1),
            ..patch()
        },
        &is_member,
    )
    .unwrap();
    assert_eq!(own["amount_minor"], 1);

    // Reassigning an order away can take it out of the editor's scope: the
    // answer then says only which order it was.
    let handed = create(t, 1, "handed over", Some(2));
    let assignee = reader(2, &["orders_edit", "orders_simple_view"]);
    let gone = update_order(
        t,
        &assignee,
        handed,
        &OrderPatch {
            assigned_to: Some(Some(3)),
            ..patch()
        },
        &is_member,
    )
    .unwrap();
    let keys: Vec<&String> = gone.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "number"]);
    assert!(is_not_found(&get_order(t, &assignee, handed)));

    let own_editor = writer(2);
    delete_order(t, &own_editor, mine).unwrap();
    assert!(is_not_found(&get_order(t, &admin(9), mine)));
    assert!(is_not_found(&delete_order(t, &own_editor, mine)));
    // A deleted order's number is never given out again.
    let next = create(t, 1, "after delete", None);
    assert_eq!(
        get_order(t, &admin(9), next).unwrap()["number"],
        "ORD-000004"
    );
}

#[test]
fn created_order_is_shown_as_the_creator_sees_it() {
    let t = tenant();
    let t = &t.tenant;
    let blind_creator = reader(5, &["orders_create"]);
    let order = create_order(t, &blind_creator, &new_order("x"), &is_member).unwrap();
    let keys: Vec<&String> = order.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "number"]);
    let simple_creator = reader(5, &["orders_create", "orders_simple_view"]);
    let order = create_order(t, &simple_creator, &new_order("y"), &is_member).unwrap();
    assert_eq!(seen(&order), Seen::Simple);
}

#[test]
fn history_records_every_change() {
    let t = tenant();
    let t = &t.tenant;
    let id = create(t, 1, "desk", None);
    let before = get_order(t, &writer(1), id).unwrap();
    // A patch that changes nothing writes nothing.
    let same = update_order(
        t,
        &writer(1),
        id,
        &OrderPatch {
            title: Some("desk".into()),
            status: Some("new".into()),
            ..patch()
        },
        &is_member,
    )
    .unwrap();
    assert_eq!(same, before);

    let editor = writer(1);
    let changed = update_order(
        t,
        &editor,
        id,
        &OrderPatch {
            title: Some("oak desk".into()),
            customer_name: Some("Grace Hopper".into()),
            customer_email: Some(None),
            amount_minor: Some(99),
            status: Some("confirmed".into()),
            assigned_to: Some(Some(2)),
            ..patch()
        },
        &is_member,
    )
    .unwrap();
    assert!(changed["updated_at"].as_str() >= before["updated_at"].as_str());

    let history = order_history(t, &editor, id).unwrap();
    let rows: Vec<(&str, Option<&str>, Option<&str>)> = history
        .iter()
        .map(|e| {
            (
                e.field.as_str(),
                e.from_value.as_deref(),
                e.to_value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("created", None, Some("ORD-000001")),
            ("title", Some("desk"), Some("oak desk")),
            ("customer_name", Some("Ada Lovelace"), Some("Grace Hopper")),
            ("status", Some("new"), Some("confirmed")),
            ("customer_email", Some("ada@example.com"), None),
            ("amount_minor", Some("12345"), Some("99")),
            ("assigned_to", None, Some("2")),
        ]
    );
    assert!(history.iter().all(|e| e.user_id == 1 && e.order_id == id));
    assert!(history[1..].iter().all(|e| e.at == changed["updated_at"]));

    // A simple view sees the history of the simple fields only.
    let simple: Vec<String> = order_history(t, &reader(5, &["orders_simple_view_all"]), id)
        .unwrap()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(simple, ["created", "title", "status", "assigned_to"]);
}

#[test]
fn filters_search_and_sorts() {
    let t = tenant();
    let t = &t.tenant;
    let me = writer(1);
    for i in 1..=12 {
        let order = NewOrder {
            customer_name: if i == 5 {
                "Zed Zebra".into()
            } else {
                "Ada".into()
            },
            assigned_to: (i % 3 == 0).then_some(3),
            ..new_order(&format!("item {i}"))
        };
        create_order(t, &me, &order, &is_member).unwrap();
    }
    let boss = admin(9);
    let ids = |r: &Reader, q: OrderQuery| -> Vec<String> {
        all_orders(t, r, &q)
            .iter()
            .map(|v| v["number"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |s: &str| OrderQuery {
        q: Some(s.into()),
        sort: Some("number".into()),
        ..OrderQuery::default()
    };
    assert_eq!(ids(&boss, q("ORD-000012")), ["ORD-000012"]);
    // "12" is number 12 and every title containing 12.
    assert_eq!(ids(&boss, q("12")), ["ORD-000012"]);
    assert_eq!(
        ids(&boss, q("1")),
        ["ORD-000001", "ORD-000010", "ORD-000011", "ORD-000012"]
    );
    assert_eq!(ids(&boss, q("zebra")), ["ORD-000005"]);
    assert_eq!(ids(&boss, q("100%")), Vec::<String>::new());
    // A customer name does not match where the reader cannot see it.
    assert_eq!(
        ids(&reader(5, &["orders_simple_view_all"]), q("zebra")),
        Vec::<String>::new()
    );

    let assigned = OrderQuery {
        assigned_to: Some(3),
        sort: Some("-number".into()),
        ..OrderQuery::default()
    };
    assert_eq!(
        ids(&boss, assigned),
        ["ORD-000012", "ORD-000009", "ORD-000006", "ORD-000003"]
    );

    let first = all_orders(t, &boss, &OrderQuery::default())[0].clone();
    update_order(
        t,
        &boss,
        id_of(&first),
        &status_patch("confirmed"),
        &is_member,
    )
    .unwrap();
    let confirmed = OrderQuery {
        status: Some("confirmed".into()),
        ..OrderQuery::default()
    };
    assert_eq!(ids(&boss, confirmed), [first["number"].as_str().unwrap()]);
    // Default sort is newest first.
    assert_eq!(first["number"], "ORD-000012");

    let bad = OrderQuery {
        status: Some("lost".into()),
        sort: Some("price".into()),
        limit: Some(500),
        cursor: Some("zz".into()),
        ..OrderQuery::default()
    };
    assert_eq!(
        fields(list_orders(t, &boss, &bad)),
        ["cursor", "limit", "sort", "status"]
    );
    // A cursor is only good for the sort it was made for.
    let page = list_orders(
        t,
        &boss,
        &OrderQuery {
            limit: Some(2),
            sort: Some("number".into()),
            ..OrderQuery::default()
        },
    )
    .unwrap();
    let elsewhere = OrderQuery {
        cursor: page.next,
        sort: Some("-number".into()),
        ..OrderQuery::default()
    };
    assert_eq!(fields(list_orders(t, &boss, &elsewhere)), ["cursor"]);
}

#[test]
fn pagination_returns_every_row_once_under_concurrent_inserts() {
    let t = tenant();
    let t = &t.tenant;
    for i in 0..60 {
        create(t, 1, &format!("before {i}"), None);
    }
    let boss = admin(9);
    let existing: BTreeSet<i64> = all_orders(t, &boss, &OrderQuery::default())
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(existing.len(), 60);
    for sort in [
        "-created_at",
        "created_at",
        "number",
        "-number",
        "updated_at",
        "-updated_at",
    ] {
        let inserter = {
            let t = t.clone();
            let sort = sort.to_string();
            thread::spawn(move || {
                for i in 0..30 {
                    create(&t, 2, &format!("during {sort} {i}"), None);
                }
            })
        };
        let mut seen = Vec::new();
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = list_orders(
                t,
                &boss,
                &OrderQuery {
                    sort: Some(sort.into()),
                    limit: Some(7),
                    cursor: cursor.clone(),
                    ..OrderQuery::default()
                },
            )
            .unwrap();
            for o in &page.items {
                let v = &serde_json::to_value(o).unwrap();
                seen.push(id_of(v));
                let column = sort.trim_start_matches('-');
                keys.push((v[column].as_str().unwrap().to_string(), id_of(v)));
            }
            // Give the inserter a chance to interleave.
            thread::yield_now();
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        inserter.join().unwrap();
        let unique: BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: a row came twice");
        assert!(existing.is_subset(&unique), "{sort}: a row was skipped");
        // And in order. ("ORD-" numbers of equal width sort as text.)
        let mut sorted = keys.clone();
        sorted.sort();
        if sort.starts_with('-') {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{sort}");
    }
}

#[test]
fn concurrent_creators_get_consecutive_numbers() {
    let t = tenant();
    let threads = 16;
    let each = 10;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let tenant = t.tenant.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (0..each)
                    .map(|j| {
                        let v = create_order(
                            &tenant,
                            &writer(1 + (i as i64 % 9)),
                            &new_order(&format!("t{i} o{j}")),
                            &is_member,
                        )
                        .unwrap();
                        parse_order_number(v["number"].as_str().unwrap()).unwrap()
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let mut numbers: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    numbers.sort();
    let n = (threads * each) as i64;
    assert_eq!(numbers, (1..=n).collect::<Vec<_>>());
    let stored: i64 = t
        .tenant
        .conn()
        .unwrap()
        .query_row("SELECT count(DISTINCT number) FROM orders", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, n);
}

#[test]
fn demo_seed_covers_every_status_once() {
    let t = tenant();
    let t = &t.tenant;
    let mut rng = rand::thread_rng();
    assert!(matches!(
        seed_demo(t, &[], &mut rng),
        Err(WorkspaceError::Validation(_))
    ));
    let summary = seed_demo(t, &[1, 2, 3], &mut rng).unwrap();
    assert_eq!(summary.orders, 200);
    assert_eq!(summary.chats, 3);
    assert!(summary.messages > 0);
    let boss = admin(1);
    let orders = all_orders(t, &boss, &OrderQuery::default());
    assert_eq!(orders.len(), 200);
    let statuses: BTreeSet<&str> = orders
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 6);
    // The history of a delivered order walks the workflow.
    let delivered = orders.iter().find(|o| o["status"] == "delivered").unwrap();
    let steps: Vec<String> = order_history(t, &boss, id_of(delivered))
        .unwrap()
        .into_iter()
        .filter(|e| e.field == "status")
        .filter_map(|e| e.to_value)
        .collect();
    assert_eq!(steps, ["confirmed", "in_progress", "shipped", "delivered"]);
    // Every seeded row passes the checks a user's input would.
    for o in &orders {
        assert!(CURRENCIES.contains(&o["currency"].as_str().unwrap()));
        if let Some(email) = o["customer_email"].as_str() {
            assert!(check_email(email, EmailRule::Mailbox).is_ok(), "{email}");
        }
        if let Some(phone) = o["customer_phone"].as_str() {
            assert!(valid_phone(phone), "{phone}");
        }
    }
    assert_eq!(
        super::list_chats(t, &reader(1, &["chats_view_all"]))
            .unwrap()
            .len(),
        3
    );
    // Twice does not double it.
    assert_eq!(
        seed_demo(t, &[1, 2, 3], &mut rng).unwrap(),
        Default::default()
    );
}

#[test]
fn currency_list_is_sorted_for_binary_search() {
    let mut sorted = CURRENCIES.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, CURRENCIES);
    assert!(CURRENCIES
        .iter()
        .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
}

/// Re-preparations of every statement prepared on `conn` (the cached ones stay prepared).
fn reprepares(conn: &rusqlite::Connection) -> i64 {
    use rusqlite::ffi;
    let mut total = 0;
    // SAFETY: the handle is valid while `conn` is borrowed; sqlite3_next_stmt walks the
    // connection's own list of statements and sqlite3_stmt_status only reads a counter.
    unsafe {
        let db = conn.handle();
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            total += i64::from(ffi::sqlite3_stmt_status(
                stmt,
                ffi::SQLITE_STMTSTATUS_REPREPARE,
                0,
            ));
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    total
}

/// A page's statement is prepared once and reused: SQLite re-prepares a statement whose plan
/// depends on a bound value (a bound LIMIT, since 3.45) each time that value is bound again,
/// which cost more than reading the page.
#[test]
fn pages_reuse_their_prepared_statements() {
    let tt = tenant();
    let t = &tt.tenant;
    for i in 0..5 {
        create(t, 1, &format!("order {i}"), None);
    }
    let boss = admin(1);
    let mine = writer(1);
    for limit in [2, 2, 3, 2, 3] {
        for (who, status) in [(&boss, None), (&mine, Some("new".to_string()))] {
            let page = list_orders(
                t,
                who,
                &OrderQuery {
                    limit: Some(limit),
                    status,
                    ..OrderQuery::default()
                },
            )
            .unwrap();
            assert_eq!(page.items.len(), limit as usize);
        }
    }
    // Sequential calls on one thread: the pool served them all from one connection.
    let conn = t.conn().unwrap();
    assert_eq!(reprepares(&conn), 0);

    // The counter does see it when it happens: the same kind of page with its LIMIT bound.
    let mut bound = conn
        .prepare_cached("SELECT id FROM orders ORDER BY id DESC LIMIT ?1")
        .unwrap();
    for limit in [2, 3, 2] {
        bound
            .query_map([limit], |r| r.get::<_, i64>(0))
            .unwrap()
            .count();
    }
    drop(bound);
    assert!(reprepares(&conn) > 0);
}
