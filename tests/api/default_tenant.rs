//! `serve --default-tenant`: the central host's requests that name no tenant go to it, while
//! the admin API, the portal (under /admin then) and inbound webhooks stay central; a tenant
//! named another way wins; a member of another tenant cannot read it; a suspended or missing
//! default is a clear error, never another tenant.

use serde_json::{json, Value};

use crate::support::{spawn_app_with, TestApp};
use crate::ui::boot;

const HTML: (&str, &str) = ("Accept", "text/html");

/// An app whose default tenant is `acme` (made before the server starts, so that the owner's
/// sign-in on the central host finds it), with `globex` beside it; the owner is admin of both.
fn app() -> TestApp {
    let test = spawn_app_with(|config| {
        let catalog =
            tenantd::catalog::Catalog::open(&config.data_dir, tenantd::db::Create::IfMissing)
                .unwrap();
        tenantd::tenancy::lifecycle::create(
            &catalog,
            &tenantd::tenancy::lifecycle::NewTenant {
                slug: "acme".into(),
                name: "Acme Inc".into(),
                domains: Vec::new(),
            },
        )
        .unwrap();
        config.identify.default_tenant = Some("acme".into());
    });
    test.join(test.owner_id, "acme", "admin");
    test.create_tenant("globex", &[]);
    test
}

fn id_of(test: &TestApp, slug: &str) -> String {
    test.app
        .catalog
        .by_slug(slug)
        .unwrap()
        .expect(slug)
        .id
        .clone()
}

fn tenant_as(test: &TestApp, token: &str, path: &str, headers: &[(&str, &str)]) -> Value {
    let auth = format!("Bearer {token}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let reply = test.call("GET", path, &all, None);
    json!({"status": reply.status, "id": reply.json()["id"], "code": reply.json()["error"]["code"]})
}

#[test]
fn the_central_host_serves_the_default_tenant_and_keeps_its_admin_routes() {
    let test = app();
    let (acme, globex) = (id_of(&test, "acme"), id_of(&test, "globex"));
    let owner = test.owner_token.clone();
    for host in ["localhost", "127.0.0.1:8080"] {
        let got = tenant_as(&test, &owner, "/api/tenant", &[("Host", host)]);
        assert_eq!(got["id"], acme.as_str(), "{host}: {got}");
    }
    // Other tenants as before: by path and by subdomain.
    let got = tenant_as(&test, &owner, "/t/globex/api/tenant", &[]);
    assert_eq!(got["id"], globex.as_str());
    let got = tenant_as(
        &test,
        &owner,
        "/api/tenant",
        &[("Host", "globex.localhost")],
    );
    assert_eq!(got["id"], globex.as_str());
    // A host that is not central is not the default's.
    let got = tenant_as(&test, &owner, "/api/tenant", &[("Host", "elsewhere.test")]);
    assert_ne!(got["id"], acme.as_str(), "{got}");
    // The admin API stays on the central host (globex was made through it above).
    let listed = test.admin("GET", "/api/admin/tenants", None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let me = test.admin("GET", "/api/admin/me", None);
    assert_eq!(me.status, 200, "{}", me.text());
    // The browser: the workspace of acme at /, the portal under /admin.
    let page = test.call("GET", "/", &[HTML], None);
    assert_eq!(page.status, 200, "{}", page.text());
    let b = boot(&page);
    assert_eq!(b["area"], "workspace");
    assert_eq!(b["tenant"], json!({"slug": "acme", "base": ""}));
    for path in ["/admin", "/admin/tenants/globex"] {
        let page = test.call("GET", path, &[HTML], None);
        assert_eq!(page.status, 200, "{path}: {}", page.text());
        let b = boot(&page);
        assert_eq!(
            (b["area"].as_str(), b["base"].as_str()),
            (Some("portal"), Some("/admin"))
        );
        assert_eq!(b["tenant"], Value::Null);
    }
    // Writes land in the default tenant's file only.
    let order =
        json!({"title": "by default", "customer_name": "C", "amount_minor": 1, "currency": "EUR"});
    let made = test.as_bearer(&owner, "POST", "/api/orders", &[], Some(order));
    assert_eq!(made.status, 201, "{}", made.text());
    let count = |path: &str| {
        test.get(path, &[]).json()["orders"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("/t/acme/api/orders"), 1);
    assert_eq!(count("/t/globex/api/orders"), 0);
}

#[test]
fn a_named_tenant_wins_over_the_default_and_another_tenants_member_cannot_read_it() {
    let test = app();
    let globex = id_of(&test, "globex");
    let outsider = test.member_token("only-globex@example.test", "globex", "admin");
    // Named by header, by id or by path: that tenant, not the default.
    let got = tenant_as(
        &test,
        &outsider,
        "/api/tenant",
        &[("X-Tenant-Slug", "globex")],
    );
    assert_eq!(
        (got["status"].as_u64(), got["id"].as_str()),
        (Some(200), Some(globex.as_str()))
    );
    let got = tenant_as(&test, &outsider, "/api/tenant", &[("X-Tenant-Id", &globex)]);
    assert_eq!(got["id"], globex.as_str());
    // The default tenant is not theirs: refused, on every read, with no data.
    for path in ["/api/tenant", "/api/orders", "/api/chats", "/api/members"] {
        let reply = test.as_bearer(&outsider, "GET", path, &[], None);
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
        assert!(!reply.text().contains("Acme"), "{path}: {}", reply.text());
    }
    // And a member of the default only gains nothing of globex by the header.
    let insider = test.member_token("only-acme@example.test", "acme", "admin");
    let got = tenant_as(
        &test,
        &insider,
        "/api/tenant",
        &[("X-Tenant-Slug", "globex")],
    );
    assert_eq!(got["status"], 403, "{got}");
    let got = tenant_as(&test, &insider, "/api/tenant", &[]);
    assert_eq!(got["status"], 200, "{got}");
}

#[test]
fn a_suspended_or_missing_default_tenant_is_a_clear_error_never_another() {
    let test = app();
    let globex = id_of(&test, "globex");
    let owner = test.owner_token.clone();
    let done = test.admin("POST", "/api/admin/tenants/acme/suspend", None);
    assert_eq!(done.status, 200, "{}", done.text());
    let got = tenant_as(&test, &owner, "/api/tenant", &[]);
    assert_eq!(
        (got["status"].as_u64(), got["code"].as_str()),
        (Some(403), Some("tenant_suspended"))
    );
    let page = test.call("GET", "/", &[HTML], None);
    assert_eq!(page.status, 403);
    assert_eq!(boot(&page)["tenant"]["slug"], "acme");
    // Deleted, then gone from the catalog: 503 naming the setting, and the rest still works.
    for step in ["delete", "purge"] {
        let (method, path) = match step {
            "delete" => ("DELETE", "/api/admin/tenants/acme".to_string()),
            _ => ("POST", "/api/admin/tenants/acme/purge".to_string()),
        };
        let done = test.admin(method, &path, None);
        assert!(done.status < 300, "{step}: {}", done.text());
        for path in ["/api/tenant", "/"] {
            let reply = test.call(
                "GET",
                path,
                &[("Authorization", &format!("Bearer {owner}")), HTML],
                None,
            );
            assert_eq!(reply.status, 503, "{step} {path}: {}", reply.text());
            assert_eq!(reply.error_code(), "default_tenant_missing");
            assert!(reply.text().contains("acme") && reply.text().contains("--default-tenant"));
        }
        let got = tenant_as(&test, &owner, "/t/globex/api/tenant", &[]);
        assert_eq!(got["id"], globex.as_str());
        assert_eq!(test.admin("GET", "/api/admin/tenants", None).status, 200);
        let portal = test.call("GET", "/admin", &[HTML], None);
        assert_eq!(portal.status, 200, "{step}");
    }
}

/// Sign-in, the account and the real-time routes are nobody's tenant routes: a person of
/// another company signing in on the central host is not recorded in the default's audit log,
/// and a default that is down takes none of them with it.
#[test]
fn central_routes_take_no_default_tenant() {
    let test = app();
    let acme = id_of(&test, "acme");
    let stranger = test.user("stranger@globex.test", "member-password-1");
    test.join(stranger, "globex", "viewer");
    assert_eq!(
        test.login("stranger@globex.test", "member-password-1")
            .status,
        200
    );
    assert_eq!(test.login("stranger@globex.test", "wrong").status, 401);
    let entries: i64 = test
        .central_db()
        .query_row(
            "SELECT count(*) FROM audit_log WHERE tenant_id = ?1 AND action LIKE 'auth.%'",
            [&acme],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        entries, 0,
        "central sign-ins recorded under the default tenant"
    );

    let reply = test.admin("POST", "/api/admin/tenants/acme/suspend", None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = test.token("stranger@globex.test", "member-password-1");
    let auth = format!("Bearer {token}");
    let me = test.call("GET", "/api/me", &[("Authorization", auth.as_str())], None);
    assert_eq!(me.status, 200, "{}", me.text());
    // The default's own routes say why.
    let got = tenant_as(&test, &test.owner_token, "/api/tenant", &[]);
    assert_eq!(got["code"], "tenant_suspended", "{got}");
}
