//! Invitations through the real server: adding a person by email never hands a tenant admin a
//! credential, answers alike for known and unknown emails, and becomes a membership only when
//! the invitee accepts (a new account's own password, or the existing account's password or
//! session), once, before it expires, unless revoked. Also `/api/me` paging its memberships.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{expect, expect_error, spawn_app, spawn_app_with, text, Reply, TestApp};

/// `POST /t/{slug}/api/members {email, role}` as `bearer`: the invitation it answers.
pub fn invite(app: &TestApp, bearer: &str, slug: &str, email: &str, role: &str) -> Value {
    let reply = app.on(
        bearer,
        slug,
        "POST",
        "/api/members",
        Some(json!({"email": email, "role": role})),
    );
    expect(&reply, 201, &format!("invite {email} to {slug}"));
    reply.json()["invitation"].clone()
}

/// Accepts an invitation with a password (`{token, password}`) or, without one, with the
/// bearer's session (`{token}`).
pub fn accept(
    app: &TestApp,
    invitation: &Value,
    password: Option<&str>,
    bearer: Option<&str>,
) -> Reply {
    let mut body = json!({"token": invitation["token"]});
    if let Some(password) = password {
        body["password"] = json!(password);
    }
    match bearer {
        Some(token) => app.as_bearer(token, "POST", "/api/invitations/accept", &[], Some(body)),
        None => app.call(
            "POST",
            "/api/invitations/accept",
            &[],
            Some(&body.to_string()),
        ),
    }
}

/// The JSON's shape: every key path with the type of its value, values themselves left out.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// Every key anywhere in the JSON, lower-cased.
fn keys(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.to_lowercase());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn no_credential_in(reply: &Reply, what: &str) {
    let mut all = BTreeSet::new();
    keys(&reply.json(), &mut all);
    for bad in ["password", "temporary_password", "password_hash", "user"] {
        assert!(
            !all.contains(bad),
            "{what} answers {bad:?}: {}",
            reply.text()
        );
    }
}

fn invitation_ids(reply: &Reply, field: &str) -> Vec<i64> {
    reply.json()[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {}", reply.text()))
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

struct Companies {
    app: TestApp,
    /// acme's admin, who plays the attacker.
    acme_admin: String,
    globex_admin: String,
}

fn two_companies() -> Companies {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let (_, acme_admin) = app.member("alice@acme.test", "acme", "admin");
    let (_, globex_admin) = app.member("gina@globex.test", "globex", "admin");
    let order = json!({"title": "Globex secret", "customer_name": "Hank Scorpio",
                       "amount_minor": 100, "currency": "EUR"});
    expect(
        &app.on(&globex_admin, "globex", "POST", "/api/orders", Some(order)),
        201,
        "a globex order",
    );
    Companies {
        app,
        acme_admin,
        globex_admin,
    }
}

/// acme's admin must never reach globex: its orders, its members.
fn globex_is_out_of_reach(app: &TestApp, token: &str, what: &str) {
    for path in ["/api/orders", "/api/members"] {
        expect_error(
            &app.on(token, "globex", "GET", path, None),
            403,
            "not_a_member",
            &format!("{what}: {path}"),
        );
    }
}

#[test]
fn the_takeover_sequence_of_the_issue_gives_acmes_admin_no_credential_and_no_way_in() {
    let Companies {
        app,
        acme_admin,
        globex_admin,
    } = two_companies();
    // acme's admin adds an email of globex's domain: an invitation, and nothing else.
    let added = app.on(
        &acme_admin,
        "acme",
        "POST",
        "/api/members",
        Some(json!({"email": "newhire@globex.test", "role": "viewer"})),
    );
    expect(&added, 201, "acme invites newhire");
    no_credential_in(&added, "acme's invitation");
    let acmes = added.json()["invitation"].clone();
    assert_eq!(acmes["status"], "pending");
    assert!(
        app.app
            .catalog
            .user_by_email("newhire@globex.test")
            .unwrap()
            .is_none(),
        "an account was made before anyone accepted"
    );
    // ... and removes it again.
    let revoked = app.on(
        &acme_admin,
        "acme",
        "DELETE",
        &format!("/api/invitations/{}", acmes["id"]),
        None,
    );
    expect(&revoked, 200, "acme revokes");
    assert_eq!(revoked.json()["invitation"]["status"], "revoked");

    // globex's admin adds the same email; the real newhire accepts with her own password.
    let globexs = invite(
        &app,
        &globex_admin,
        "globex",
        "newhire@globex.test",
        "viewer",
    );
    let joined = accept(&app, &globexs, Some("newhire-own-password"), None);
    expect(&joined, 200, "newhire joins globex");
    let newhire = text(&joined.json()["token"]);
    expect(
        &app.on(&newhire, "globex", "GET", "/api/orders", None),
        200,
        "newhire reads globex's orders",
    );

    // acme's admin has nothing to log in with: the old token is spent, no password was shown.
    expect_error(
        &accept(&app, &acmes, Some("acme-admin-guess"), None),
        410,
        "invitation_revoked",
        "acme's revoked token",
    );
    for guess in ["", "newhire", "temporary", &text(&acmes["token"])] {
        expect_error(
            &app.login("newhire@globex.test", guess),
            401,
            "invalid_credentials",
            "acme's admin logging in as newhire",
        );
    }
    globex_is_out_of_reach(&app, &acme_admin, "acme's admin");
}

#[test]
fn an_admin_who_accepts_their_own_invitation_owns_an_account_that_opens_no_other_company() {
    let Companies {
        app,
        acme_admin,
        globex_admin,
    } = two_companies();
    // The worst acme's admin can do with the token: accept it themselves, choosing the password
    // of an account for an email they do not own...
    let acmes = invite(&app, &acme_admin, "acme", "newhire@globex.test", "viewer");
    let squatted = accept(&app, &acmes, Some("attacker-chosen-1"), None);
    expect(&squatted, 200, "acme's admin accepts their own invitation");
    let user_id = squatted.json()["user"]["id"].as_i64().unwrap();
    expect(
        &app.on(
            &acme_admin,
            "acme",
            "DELETE",
            &format!("/api/members/{user_id}"),
            None,
        ),
        200,
        "acme removes the member",
    );
    // ... but globex's invitation of that email is globex's token, which acme never sees: an
    // account joins a company only with that company's token.
    let globexs = invite(
        &app,
        &globex_admin,
        "globex",
        "newhire@globex.test",
        "viewer",
    );
    let attacker = app.token("newhire@globex.test", "attacker-chosen-1");
    globex_is_out_of_reach(&app, &attacker, "the account acme's admin made");
    expect_error(
        &accept(&app, &acmes, None, Some(&attacker)),
        410,
        "invitation_accepted",
        "acme's spent token, again",
    );
    let members = app.on(&globex_admin, "globex", "GET", "/api/members", None);
    assert!(!members.json()["members"]
        .to_string()
        .contains("newhire@globex.test"));
    assert_eq!(
        invitation_ids(&members, "invitations"),
        [globexs["id"].as_i64().unwrap()]
    );
}

#[test]
fn inviting_an_existing_and_a_new_email_answers_alike() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let existing = app.user("known@globex.test", "known-password-1");
    app.join(existing, "globex", "agent");
    let ask = |email: &str| {
        app.on(
            &app.owner_token,
            "acme",
            "POST",
            "/api/members",
            Some(json!({"email": email, "role": "viewer"})),
        )
    };
    let known = ask("known@globex.test");
    let unknown = ask("unknown@globex.test");
    expect(&known, 201, "an email with an account");
    expect(&unknown, 201, "an email without one");
    assert_eq!(shape(&known.json()), shape(&unknown.json()));
    assert_eq!(known.header("content-type"), unknown.header("content-type"));
    no_credential_in(&known, "the known email");
    no_credential_in(&unknown, "the unknown email");
    for (reply, email) in [
        (&known, "known@globex.test"),
        (&unknown, "unknown@globex.test"),
    ] {
        let invitation = &reply.json()["invitation"];
        assert_eq!(invitation["email"], email);
        assert_eq!(invitation["status"], "pending");
        assert_eq!(invitation["role"], "viewer");
    }
    // The lists say nothing about accounts either.
    let listed = app.on(&app.owner_token, "acme", "GET", "/api/invitations", None);
    expect(&listed, 200, "list");
    let listed = listed.json()["invitations"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    assert_eq!(shape(&listed[0]), shape(&listed[1]));
    assert!(app
        .app
        .catalog
        .user_by_email("unknown@globex.test")
        .unwrap()
        .is_none());
    assert!(app
        .app
        .catalog
        .membership(existing, &acme_id(&app))
        .unwrap()
        .is_none());
}

fn acme_id(app: &TestApp) -> String {
    app.app.catalog.by_slug("acme").unwrap().unwrap().id.clone()
}

#[test]
fn a_new_account_accepts_by_setting_its_own_password_once() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let invitation = invite(&app, &app.owner_token, "acme", "Ann@Example.test", "agent");
    assert!(text(&invitation["accept_path"]).starts_with("/api/invitations/accept"));
    let token = text(&invitation["token"]);
    assert_eq!(token.len(), 64);

    let lookup = app.call(
        "POST",
        "/api/invitations/lookup",
        &[],
        Some(&json!({"token": token}).to_string()),
    );
    expect(&lookup, 200, "lookup");
    let found = lookup.json();
    assert_eq!(found["tenant"]["slug"], "acme");
    assert_eq!(found["tenant"]["name"], "acme Inc");
    assert_eq!(found["invitation"]["email"], "ann@example.test");
    assert_eq!(found["invitation"]["role"], "agent");
    no_credential_in(&lookup, "the lookup");

    let weak = accept(&app, &invitation, Some("short"), None);
    expect_error(&weak, 422, "validation_failed", "a weak password");
    assert!(weak.json()["error"]["fields"]["password"].is_string());
    expect_error(
        &app.call(
            "POST",
            "/api/invitations/accept",
            &[],
            Some(&json!({"token": "0".repeat(64), "password": "ann-password-1"}).to_string()),
        ),
        404,
        "invitation_invalid",
        "a token of no invitation",
    );
    let joined = accept(&app, &invitation, Some("ann-password-1"), None);
    expect(&joined, 200, "accept");
    assert!(joined.header("set-cookie").is_some());
    let body = joined.json();
    assert_eq!(body["role"], "agent");
    assert_eq!(body["tenant"]["slug"], "acme");
    assert_eq!(body["user"]["email"], "ann@example.test");
    assert_eq!(body["user"]["name"], "ann");
    expect(
        &app.on(&text(&body["token"]), "acme", "GET", "/api/tenant", None),
        200,
        "ann in acme",
    );
    app.token("ann@example.test", "ann-password-1");

    // Single use.
    expect_error(
        &accept(&app, &invitation, Some("ann-password-1"), None),
        410,
        "invitation_accepted",
        "accepted twice",
    );
    expect_error(
        &app.call(
            "POST",
            "/api/invitations/lookup",
            &[],
            Some(&json!({"token": token}).to_string()),
        ),
        410,
        "invitation_accepted",
        "lookup after use",
    );
    // A member now, not an invitation.
    let members = app.on(&app.owner_token, "acme", "GET", "/api/members", None);
    assert!(members.text().contains("ann@example.test"));
    assert!(invitation_ids(&members, "invitations").is_empty());
    expect_error(
        &app.on(
            &app.owner_token,
            "acme",
            "POST",
            "/api/members",
            Some(json!({"email": "ann@example.test", "role": "viewer"})),
        ),
        409,
        "already_a_member",
        "inviting a member",
    );
}

#[test]
fn an_existing_account_accepts_with_its_own_password_or_session_only() {
    let app = spawn_app_with(|c| c.throttle.free_failures = 100);
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let (bob_id, bob) = app.member("bob@globex.test", "globex", "viewer");

    let by_password = invite(&app, &app.owner_token, "acme", "bob@globex.test", "viewer");
    expect_error(
        &accept(&app, &by_password, Some("not-bobs-password"), None),
        401,
        "invalid_credentials",
        "the wrong password",
    );
    assert!(app
        .app
        .catalog
        .membership(bob_id, &acme_id(&app))
        .unwrap()
        .is_none());
    // Signed in as nobody, without a password: say what is missing.
    expect_error(
        &accept(&app, &by_password, None, None),
        422,
        "validation_failed",
        "neither password nor session",
    );
    // A personal token acts within one tenant; joining another is not among its powers.
    let (_, personal) = app.personal_token(&bob, "ci", "globex");
    expect_error(
        &accept(&app, &by_password, None, Some(&personal)),
        403,
        "forbidden",
        "a personal token",
    );
    let joined = accept(&app, &by_password, Some("member-password-1"), None);
    expect(&joined, 200, "bob's own password");
    assert_eq!(joined.json()["user"]["id"], bob_id);
    expect(
        &app.on(&bob, "acme", "GET", "/api/tenant", None),
        200,
        "bob in acme",
    );

    // Another company, by his session.
    app.create_tenant("initech", &[]);
    let by_session = invite(
        &app,
        &app.owner_token,
        "initech",
        "BOB@globex.test",
        "agent",
    );
    let joined = accept(&app, &by_session, None, Some(&bob));
    expect(&joined, 200, "bob's own session");
    assert_eq!(joined.json()["role"], "agent");
    expect(
        &app.on(&bob, "initech", "GET", "/api/tenant", None),
        200,
        "bob in initech",
    );
}

#[test]
fn a_signed_in_user_cannot_accept_an_invitation_for_another_email() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let (mallory_id, mallory) = app.member("mallory@globex.test", "globex", "viewer");
    let (carol_id, carol) = app.member("carol@globex.test", "globex", "viewer");
    let invitation = invite(
        &app,
        &app.owner_token,
        "acme",
        "carol@globex.test",
        "viewer",
    );
    expect_error(
        &accept(&app, &invitation, None, Some(&mallory)),
        403,
        "forbidden",
        "mallory with carol's invitation",
    );
    // Nor by a password: the password is checked against the invitation's email's account.
    expect_error(
        &accept(&app, &invitation, Some("member-password-1-not"), None),
        401,
        "invalid_credentials",
        "a guessed password",
    );
    let acme = acme_id(&app);
    assert!(app
        .app
        .catalog
        .membership(mallory_id, &acme)
        .unwrap()
        .is_none());
    expect_error(
        &app.on(&mallory, "acme", "GET", "/api/tenant", None),
        403,
        "not_a_member",
        "mallory",
    );
    // Still good for carol.
    expect(&accept(&app, &invitation, None, Some(&carol)), 200, "carol");
    assert!(app
        .app
        .catalog
        .membership(carol_id, &acme)
        .unwrap()
        .is_some());
}

#[test]
fn an_expired_invitation_is_refused_and_a_new_one_replaces_it() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let old = invite(&app, &app.owner_token, "acme", "dan@example.test", "viewer");
    let week = old["expires_at"].as_i64().unwrap() - old["created_at"].as_i64().unwrap();
    assert_eq!(week, 7 * 24 * 3600);
    // Its time runs out (as the clock would have it a week later).
    let changed = app
        .central_db()
        .execute(
            "UPDATE invitations SET created_at = created_at - ?2, expires_at = expires_at - ?2
             WHERE id = ?1",
            rusqlite::params![old["id"].as_i64().unwrap(), week + 1],
        )
        .unwrap();
    assert_eq!(changed, 1);
    expect_error(
        &accept(&app, &old, Some("dan-password-1"), None),
        410,
        "invitation_expired",
        "accept after expiry",
    );
    assert!(app
        .app
        .catalog
        .user_by_email("dan@example.test")
        .unwrap()
        .is_none());
    let listed = app.on(&app.owner_token, "acme", "GET", "/api/invitations", None);
    assert_eq!(listed.json()["invitations"][0]["status"], "expired");

    // Inviting again replaces it with a fresh token.
    let new = invite(&app, &app.owner_token, "acme", "dan@example.test", "viewer");
    assert_ne!(new["token"], old["token"]);
    let listed = app.on(&app.owner_token, "acme", "GET", "/api/invitations", None);
    assert_eq!(
        invitation_ids(&listed, "invitations"),
        [new["id"].as_i64().unwrap()]
    );
    expect_error(
        &accept(&app, &old, Some("dan-password-1"), None),
        410,
        "invitation_revoked",
        "the replaced token",
    );
    expect(
        &accept(&app, &new, Some("dan-password-1"), None),
        200,
        "the new one",
    );
}

#[test]
fn a_company_sees_and_revokes_only_its_own_invitations() {
    let Companies {
        app,
        acme_admin,
        globex_admin,
    } = two_companies();
    let acmes = invite(&app, &acme_admin, "acme", "pat@example.test", "viewer");
    let acmes_id = acmes["id"].as_i64().unwrap();
    let globexs = invite(
        &app,
        &globex_admin,
        "globex",
        "quinn@example.test",
        "viewer",
    );
    let globexs_id = globexs["id"].as_i64().unwrap();

    for (token, slug, own) in [
        (&acme_admin, "acme", acmes_id),
        (&globex_admin, "globex", globexs_id),
    ] {
        let listed = app.on(token, slug, "GET", "/api/invitations", None);
        expect(&listed, 200, "list");
        assert_eq!(invitation_ids(&listed, "invitations"), [own], "{slug}");
        let members = app.on(token, slug, "GET", "/api/members", None);
        assert_eq!(
            invitation_ids(&members, "invitations"),
            [own],
            "{slug} members"
        );
        assert!(!listed.text().contains(&text(&acmes["token"])));
    }
    // globex's admin cannot revoke acme's invitation, whatever way acme is named.
    for path in [
        format!("/t/globex/api/invitations/{acmes_id}"),
        format!("/t/acme/api/invitations/{acmes_id}"),
    ] {
        let reply = app.as_bearer(&globex_admin, "DELETE", &path, &[], None);
        assert!(
            matches!(reply.status, 403 | 404),
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    let listed = app.on(&acme_admin, "acme", "GET", "/api/invitations", None);
    assert_eq!(listed.json()["invitations"][0]["status"], "pending");

    // A member who may view members sees invitations there, but may not manage them.
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    let members = app.on(&agent, "acme", "GET", "/api/members", None);
    assert_eq!(invitation_ids(&members, "invitations"), [acmes_id]);
    for (method, path) in [
        ("GET", "/api/invitations".to_string()),
        ("DELETE", format!("/api/invitations/{acmes_id}")),
    ] {
        expect_error(
            &app.on(&agent, "acme", method, &path, None),
            403,
            "forbidden",
            &format!("an agent: {method} {path}"),
        );
    }
    expect_error(
        &app.on(
            &agent,
            "acme",
            "POST",
            "/api/members",
            Some(json!({"email": "x@example.test", "role": "viewer"})),
        ),
        403,
        "forbidden",
        "an agent inviting",
    );

    // acme's admin revokes it: the token is dead, the list empty.
    let revoked = app.on(
        &acme_admin,
        "acme",
        "DELETE",
        &format!("/api/invitations/{acmes_id}"),
        None,
    );
    expect(&revoked, 200, "revoke");
    expect_error(
        &accept(&app, &acmes, Some("pat-password-1"), None),
        410,
        "invitation_revoked",
        "accept a revoked invitation",
    );
    expect_error(
        &app.on(
            &acme_admin,
            "acme",
            "DELETE",
            &format!("/api/invitations/{acmes_id}"),
            None,
        ),
        410,
        "invitation_revoked",
        "revoke twice",
    );
    let listed = app.on(&acme_admin, "acme", "GET", "/api/invitations", None);
    assert_eq!(invitation_ids(&listed, "invitations"), Vec::<i64>::new());
    // globex's is untouched.
    expect(
        &accept(&app, &globexs, Some("quinn-password-1"), None),
        200,
        "quinn",
    );
}

#[test]
fn an_invitation_gives_no_role_beyond_the_inviters_own() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_role("acme", "people", &["members_manage", "members_view"]);
    let (_, manager) = app.member("pm@acme.test", "acme", "people");
    expect_error(
        &app.on(
            &manager,
            "acme",
            "POST",
            "/api/members",
            Some(json!({"email": "boss@example.test", "role": "admin"})),
        ),
        403,
        "forbidden",
        "inviting an admin without all permissions",
    );
    invite(&app, &manager, "acme", "peer@example.test", "people");
}

#[test]
fn the_cli_invites_and_prints_the_token_once() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let invite = |email: &str, json: bool| {
        let mut args = vec!["members", "invite", "--tenant", "acme", "--email", email];
        args.extend(["--role", "agent"]);
        if json {
            args.push("--json");
        }
        let out = app.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = invite("eve@example.test", false);
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once): "))
        .unwrap_or_else(|| panic!("no token in {printed}"));
    assert_eq!(token.len(), 64);
    // A second invitation to the same email replaces the first.
    let out: Value = serde_json::from_str(&invite("eve@example.test", true)).unwrap();
    assert_eq!(out["replaced"], 1);
    assert_eq!(out["invitation"]["email"], "eve@example.test");
    assert!(app
        .app
        .catalog
        .user_by_email("eve@example.test")
        .unwrap()
        .is_none());
    let stale = json!({"token": token});
    expect_error(
        &accept(&app, &stale, Some("eve-password-1"), None),
        410,
        "invitation_revoked",
        "the replaced token",
    );
    let joined = accept(&app, &out, Some("eve-password-1"), None);
    expect(&joined, 200, "the printed token");
    assert_eq!(joined.json()["role"], "agent");
    let listed = app.on(&app.owner_token, "acme", "GET", "/api/members", None);
    assert!(listed.text().contains("eve@example.test"));
}

// ---------------------------------------------------------------------------------------------
// /api/me pages its memberships

#[test]
fn me_answers_a_bounded_page_of_memberships_and_the_pages_list_each_once() {
    let app = spawn_app();
    let user = app.user("busy@example.test", "busy-password-1");
    let mut slugs = BTreeSet::new();
    // Catalog rows are all a membership needs; no tenant file is opened.
    for i in 0..105 {
        let slug = format!("t{i:03}");
        app.app
            .catalog
            .insert_tenant(
                &uuid::Uuid::new_v4(),
                &slug,
                &format!("Company {}", i % 7),
                &[],
            )
            .unwrap();
        app.join(user, &slug, "viewer");
        slugs.insert(slug);
    }
    let token = app.token("busy@example.test", "busy-password-1");
    let page = |query: &str| {
        let reply = app.as_bearer(&token, "GET", &format!("/api/me{query}"), &[], None);
        expect(&reply, 200, query);
        reply.json()
    };
    let walk = |limit: Option<usize>| {
        let (mut seen, mut pages, mut after) = (Vec::new(), Vec::new(), None::<String>);
        loop {
            let mut params = Vec::new();
            params.extend(limit.map(|l| format!("limit={l}")));
            params.extend(after.as_ref().map(|a| format!("after={a}")));
            let body = page(&format!("?{}", params.join("&")));
            let memberships = body["memberships"].as_array().unwrap();
            pages.push(memberships.len());
            seen.extend(memberships.iter().map(|m| text(&m["slug"])));
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return (seen, pages),
            }
        }
    };
    let (seen, pages) = walk(None);
    assert_eq!(pages, [100, 5]);
    assert_eq!(seen.len(), slugs.len());
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), slugs);
    let (seen, pages) = walk(Some(10));
    assert_eq!(pages.len(), 11);
    assert!(pages.iter().all(|n| *n <= 10));
    assert_eq!(seen.len(), slugs.len());
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), slugs);
    // By tenant name, then slug.
    let first = page("?limit=3");
    let names: Vec<String> = first["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["name"]))
        .collect();
    assert_eq!(names, ["Company 0"; 3]);

    for bad in [
        "?limit=0",
        "?limit=201",
        "?limit=x",
        "?after=zz",
        "?after=00",
    ] {
        let reply = app.as_bearer(&token, "GET", &format!("/api/me{bad}"), &[], None);
        expect_error(&reply, 422, "validation_failed", bad);
    }
}
