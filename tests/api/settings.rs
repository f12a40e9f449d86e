//! Tenant settings (`/api/settings`, `/api/admin/tenants/{t}/settings`): validation naming each
//! bad field, the permission, isolation between tenants, the logo as served, and the order
//! currency default they set.

use data_encoding::BASE64;
use serde_json::{json, Value};

use crate::support::{expect, expect_error, spawn_app, text, TestApp};

fn two_companies() -> (TestApp, String) {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let owner = app.owner_token.clone();
    (app, owner)
}

fn order(app: &TestApp, token: &str, slug: &str, currency: Option<&str>) -> Value {
    let mut body = json!({"title": "Boxes", "customer_name": "Ada", "amount_minor": 1200});
    if let Some(c) = currency {
        body["currency"] = json!(c);
    }
    let reply = app.on(token, slug, "POST", "/api/orders", Some(body));
    expect(&reply, 201, "an order");
    reply.json()
}

#[test]
fn settings_read_with_defaults_and_change_with_each_field_normalised() {
    let (app, owner) = two_companies();
    let got = app.on(&owner, "acme", "GET", "/api/settings", None);
    expect(&got, 200, "read settings");
    assert_eq!(
        got.json(),
        json!({"locale": "en-GB", "timezone": "UTC", "date_format": "iso", "currency": "EUR",
               "theme_color": null, "logo": null})
    );
    let changed = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(
            json!({"locale": "de-de", "timezone": "Europe/Berlin", "date_format": "dmy",
                    "currency": "CHF", "theme_color": "#AA3300"}),
        ),
    );
    expect(&changed, 200, "change settings");
    let want = json!({"locale": "de-DE", "timezone": "Europe/Berlin", "date_format": "dmy",
                      "currency": "CHF", "theme_color": "#aa3300", "logo": null});
    assert_eq!(changed.json(), want);
    // A member without settings_manage reads them all the same.
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    assert_eq!(
        app.on(&agent, "acme", "GET", "/api/settings", None).json(),
        want
    );
    // null puts a field back to its default.
    let reset = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"timezone": null})),
    );
    assert_eq!(reset.json()["timezone"], "UTC");
    assert_eq!(reset.json()["locale"], "de-DE");

    let audit = app.on(
        &owner,
        "acme",
        "GET",
        "/api/audit?action=tenant.settings_changed",
        None,
    );
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

#[test]
fn each_bad_field_is_named_in_one_422_and_nothing_is_stored() {
    let (app, owner) = two_companies();
    let svg = format!(
        "data:image/svg+xml;base64,{}",
        BASE64.encode(b"<svg onload=x/>")
    );
    let reply = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(
            json!({"locale": "english please", "timezone": "Mars/Olympus", "date_format": "ymd",
            "currency": "eur", "theme_color": "red", "logo": svg, "font": "Comic Sans",
            }),
        ),
    );
    expect_error(&reply, 422, "validation_failed", "all bad");
    let fields = reply.json()["error"]["fields"].as_object().unwrap().clone();
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "currency",
            "date_format",
            "font",
            "locale",
            "logo",
            "theme_color",
            "timezone"
        ]
    );
    for (field, value) in [
        ("currency", json!("XYZ")),
        ("currency", json!(978)),
        ("timezone", json!("europe/london")),
        ("theme_color", json!("#12345g")),
        ("theme_color", json!("#1234567")),
        ("logo", json!("/logo.png")),
        ("logo", json!("data:image/png;base64,not base64!")),
    ] {
        let reply = app.on(
            &owner,
            "acme",
            "PATCH",
            "/api/settings",
            Some(json!({field: value})),
        );
        expect_error(
            &reply,
            422,
            "validation_failed",
            &format!("{field} {value}"),
        );
        assert!(
            reply.json()["error"]["fields"][field].is_string(),
            "{field}"
        );
    }
    let array = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!(["locale"])),
    );
    expect_error(&array, 400, "invalid_json", "not an object");
    let got = app.on(&owner, "acme", "GET", "/api/settings", None).json();
    assert_eq!(got["currency"], "EUR");
    assert_eq!(got["timezone"], "UTC");
}

#[test]
fn only_settings_manage_changes_settings() {
    let (app, _owner) = two_companies();
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    let reply = app.on(
        &agent,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"currency": "USD"})),
    );
    expect_error(&reply, 403, "forbidden", "an agent");
    let role = app.create_role("acme", "configurer", &["settings_manage"]);
    assert!(role > 0);
    let (_, configurer) = app.member("conf@acme.test", "acme", "configurer");
    let reply = app.on(
        &configurer,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"currency": "USD"})),
    );
    expect(&reply, 200, "settings_manage");
    // No membership, no settings: not even a read.
    let (_, outsider) = app.member("out@globex.test", "globex", "agent");
    let reply = app.on(&outsider, "acme", "GET", "/api/settings", None);
    assert!(matches!(reply.status, 403 | 404), "{}", reply.text());
}

#[test]
fn one_tenants_settings_stay_its_own() {
    let (app, _owner) = two_companies();
    let (_, acme_admin) = app.member("boss@acme.test", "acme", "admin");
    let (_, globex_admin) = app.member("boss@globex.test", "globex", "admin");
    let reply = app.on(
        &acme_admin,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"currency": "JPY", "timezone": "Asia/Tokyo"})),
    );
    expect(&reply, 200, "acme's settings");
    // acme's admin can neither read nor change globex's.
    let read = app.on(&acme_admin, "globex", "GET", "/api/settings", None);
    assert!(matches!(read.status, 403 | 404), "{}", read.text());
    let write = app.on(
        &acme_admin,
        "globex",
        "PATCH",
        "/api/settings",
        Some(json!({"currency": "GBP"})),
    );
    assert!(matches!(write.status, 403 | 404), "{}", write.text());
    let globex = app
        .on(&globex_admin, "globex", "GET", "/api/settings", None)
        .json();
    assert_eq!(
        (globex["currency"].as_str(), globex["timezone"].as_str()),
        (Some("EUR"), Some("UTC"))
    );
    // Orders without a currency take their own tenant's default.
    assert_eq!(order(&app, &acme_admin, "acme", None)["currency"], "JPY");
    assert_eq!(
        order(&app, &globex_admin, "globex", None)["currency"],
        "EUR"
    );
    // A currency given is kept.
    assert_eq!(
        order(&app, &acme_admin, "acme", Some("GBP"))["currency"],
        "GBP"
    );
    let bad = app.on(
        &acme_admin,
        "acme",
        "POST",
        "/api/orders",
        Some(json!({"title": "x", "customer_name": "y", "amount_minor": 1, "currency": "yen"})),
    );
    expect_error(
        &bad,
        422,
        "validation_failed",
        "a bad currency is not replaced",
    );
}

#[test]
fn system_admins_read_and_change_any_tenants_settings() {
    let (app, owner) = two_companies();
    let reply = app.admin(
        "PATCH",
        "/api/admin/tenants/globex/settings",
        Some(json!({"date_format": "mdy", "theme_color": "#00ff00"})),
    );
    expect(&reply, 200, "admin change");
    let got = app
        .admin("GET", "/api/admin/tenants/globex/settings", None)
        .json();
    assert_eq!(
        (got["date_format"].as_str(), got["theme_color"].as_str()),
        (Some("mdy"), Some("#00ff00"))
    );
    assert_eq!(
        app.on(&owner, "globex", "GET", "/api/settings", None)
            .json()["date_format"],
        "mdy"
    );
    assert_eq!(
        app.on(&owner, "acme", "GET", "/api/settings", None).json()["date_format"],
        "iso"
    );
    let bad = app.admin(
        "PATCH",
        "/api/admin/tenants/globex/settings",
        Some(json!({"locale": "?"})),
    );
    expect_error(&bad, 422, "validation_failed", "admin bad locale");
    let missing = app.admin("GET", "/api/admin/tenants/nobody/settings", None);
    expect_error(&missing, 404, "tenant_not_found", "no tenant");
    // A tenant member's token is no admin's.
    let member = app.as_bearer(
        &owner,
        "GET",
        "/api/admin/tenants/globex/settings",
        &[],
        None,
    );
    assert!(matches!(member.status, 401 | 403), "{}", member.text());
}

#[test]
fn the_logo_is_served_as_its_type_to_members_of_its_tenant_only() {
    let (app, owner) = two_companies();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really".to_vec();
    let url = format!("data:image/png;base64,{}", BASE64.encode(&png));
    let reply = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"logo": url})),
    );
    expect(&reply, 200, "set the logo");
    let path = text(&reply.json()["logo"]);
    assert!(path.starts_with("/api/settings/logo?v="), "{path}");
    let logo = app.on(&owner, "acme", "GET", &path, None);
    expect(&logo, 200, "the logo");
    assert_eq!(logo.header("content-type"), Some("image/png"));
    assert_eq!(logo.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(logo.body, png);
    let none = app.on(&owner, "globex", "GET", "/api/settings/logo", None);
    expect_error(&none, 404, "not_found", "globex has no logo");
    let cleared = app.on(
        &owner,
        "acme",
        "PATCH",
        "/api/settings",
        Some(json!({"logo": null})),
    );
    assert_eq!(cleared.json()["logo"], Value::Null);
    expect_error(
        &app.on(&owner, "acme", "GET", "/api/settings/logo", None),
        404,
        "not_found",
        "cleared",
    );
}
