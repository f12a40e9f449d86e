//! Login throttling through the real server: device cookies let the owner in while guessers
//! from many addresses lock out every unknown client, the guessers' bound, forged and foreign
//! cookies, a device locked on its own, the key surviving a restart; and catalog faults during
//! a login or a member check, which are the server's (5xx), not the client's.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    expect, request_to, spawn_app_full, spawn_serve, Reply, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD,
    OWNER_EMAIL, OWNER_PASSWORD,
};

const USER_LOGIN: &str = "/api/auth/login";
const ADMIN_LOGIN: &str = "/api/admin/auth/login";
const USER_DEVICE: &str = "tenantd_device";
const ADMIN_DEVICE: &str = "tenantd_admin_device";

/// The default throttle, with client addresses taken from `X-Forwarded-For` (a trusted proxy).
fn app() -> TestApp {
    spawn_app_full(
        |c| c.throttle.frozen_clock = true,
        |h| h.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
    )
}

/// A login from `ip`, with a device cookie `(name, value)` if given.
fn login(
    app: &TestApp,
    path: &str,
    ip: &str,
    device: Option<(&str, &str)>,
    email: &str,
    password: &str,
) -> Reply {
    let cookie = device.map(|(name, value)| format!("{name}={value}"));
    let mut headers = vec![("X-Forwarded-For", ip)];
    if let Some(cookie) = &cookie {
        headers.push(("Cookie", cookie.as_str()));
    }
    let body = json!({"email": email, "password": password}).to_string();
    app.call("POST", path, &headers, Some(&body))
}

/// The `Set-Cookie` header of the cookie `name`, if the reply sets it (and only once).
fn set_cookie<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    let set: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with(&prefix))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(set.len() <= 1, "{name} set twice: {:?}", reply.headers);
    set.first().copied()
}

/// The owner's login with the right password from `ip`, with a (user) device cookie if given.
fn owner(app: &TestApp, ip: &str, device: Option<&str>) -> Reply {
    let device = device.map(|value| (USER_DEVICE, value));
    login(app, USER_LOGIN, ip, device, OWNER_EMAIL, OWNER_PASSWORD)
}

/// The device cookie `name` that a successful login sets, its attributes checked.
fn device_cookie(reply: &Reply, name: &str) -> String {
    expect(reply, 200, "login");
    let set =
        set_cookie(reply, name).unwrap_or_else(|| panic!("no {name} cookie: {:?}", reply.headers));
    let parts: Vec<&str> = set.split(';').map(str::trim).collect();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(parts.contains(&attribute), "{attribute} missing: {set}");
    }
    assert!(
        !parts.contains(&"Secure"),
        "Secure without --secure-cookies"
    );
    let value = parts[0]
        .strip_prefix(&format!("{name}="))
        .unwrap()
        .to_string();
    assert!(!value.is_empty());
    value
}

/// Wrong passwords for `email` from a fresh address each: the statuses answered.
fn guesses(app: &TestApp, path: &str, email: &str, count: u32, net: &str) -> Vec<u16> {
    (0..count)
        .map(|i| login(app, path, &format!("{net}.{}", i + 1), None, email, "guess").status)
        .collect()
}

#[test]
fn the_owner_logs_in_from_a_known_device_while_guessers_from_many_addresses_lock_out_the_rest() {
    let app = app();
    let first = owner(&app, "203.0.113.1", None);
    let laptop = device_cookie(&first, USER_DEVICE);

    // Six guesses lock out the account's unknown clients, from whatever address.
    let mut answers = guesses(&app, USER_LOGIN, OWNER_EMAIL, 6, "198.51.100");
    answers.extend(guesses(&app, USER_LOGIN, OWNER_EMAIL, 40, "192.0.2"));
    assert_eq!(answers[..6], [401; 6], "{answers:?}");
    assert!(answers[6..].iter().all(|s| *s == 429), "{answers:?}");
    // Six guesses from one address, at any accounts, lock that address for unknown clients.
    for i in 0..6 {
        let email = format!("nobody{i}@example.test");
        let reply = login(&app, USER_LOGIN, "198.18.0.1", None, &email, "guess");
        expect(&reply, 401, &email);
    }
    app.user("eve@example.test", "eve-password-1");
    let eve = login(
        &app,
        USER_LOGIN,
        "198.18.0.1",
        None,
        "eve@example.test",
        "eve-password-1",
    );
    expect(&eve, 429, "another account from the locked address");
    let fresh = owner(&app, "203.0.113.2", None);
    expect(&fresh, 429, "the owner from an unknown client");
    assert!(fresh.header("retry-after").is_some());

    // The owner's known device gets in, and is given a new cookie each time.
    let known = owner(&app, "203.0.113.1", Some(&laptop));
    let renewed = device_cookie(&known, USER_DEVICE);
    assert_ne!(renewed, laptop);
    let token = known.json()["token"].as_str().unwrap().to_string();
    expect(
        &app.as_bearer(&token, "GET", "/api/me", &[], None),
        200,
        "the session works",
    );
    // Even from a guesser's locked address (the same network, say).
    let shared = owner(&app, "198.18.0.1", Some(&renewed));
    expect(&shared, 200, "the known device from a locked address");
    // A typo on the known device costs its own budget, not a 429.
    let typo = login(
        &app,
        USER_LOGIN,
        "203.0.113.1",
        Some((USER_DEVICE, &renewed)),
        OWNER_EMAIL,
        "owner-pasword-1",
    );
    expect(&typo, 401, "a typo on the known device");

    // System admins likewise, with a cookie of their own realm.
    let first = login(
        &app,
        ADMIN_LOGIN,
        "203.0.113.9",
        None,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
    );
    let console = device_cookie(&first, ADMIN_DEVICE);
    let answers = guesses(&app, ADMIN_LOGIN, ADMIN_EMAIL, 12, "198.51.101");
    assert_eq!(answers[..6], [401; 6], "{answers:?}");
    assert!(answers[6..].iter().all(|s| *s == 429), "{answers:?}");
    let unknown = login(
        &app,
        ADMIN_LOGIN,
        "203.0.113.10",
        None,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
    );
    expect(&unknown, 429, "the admin from an unknown client");
    let known = login(
        &app,
        ADMIN_LOGIN,
        "203.0.113.10",
        Some((ADMIN_DEVICE, &console)),
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
    );
    device_cookie(&known, ADMIN_DEVICE);
}

/// The bound the README states: with the default throttle, the unknown clients of one account,
/// from however many addresses, get 6 guesses at once, 18 in the first hour and 110 in a day.
/// The guesser here is the best there is: a fresh address for every guess, and each next guess
/// the moment `Retry-After` says. The owner logs in from a known device every half hour all
/// the while, and gives the guesser nothing by it.
#[test]
fn guesses_from_many_addresses_stay_bounded() {
    const HOUR: u64 = 3600;
    const OWNER_EVERY: u64 = 1800;
    let app = app();
    let mut device = device_cookie(&owner(&app, "203.0.113.1", None), USER_DEVICE);
    // Seconds of the throttle's clock since the attack began, moved only by this test.
    let mut clock = 0u64;
    let mut next_owner_login = 0u64;
    let mut guessed_at = Vec::new();
    let mut address = 0u32;
    while clock < 24 * HOUR {
        if clock >= next_owner_login {
            let reply = owner(&app, "203.0.113.1", Some(&device));
            device = device_cookie(&reply, USER_DEVICE);
            next_owner_login += OWNER_EVERY;
        }
        address += 1;
        let ip = format!(
            "10.{}.{}.{}",
            address >> 16,
            (address >> 8) & 255,
            address & 255
        );
        let reply = login(&app, USER_LOGIN, &ip, None, OWNER_EMAIL, "guess");
        match reply.status {
            401 => guessed_at.push(clock),
            429 => {
                let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert!(wait >= 1);
                let wait = wait.min(next_owner_login.saturating_sub(clock).max(1));
                app.app.throttle.advance(Duration::from_secs(wait));
                clock += wait;
            }
            other => panic!("guess answered {other}: {}", reply.text()),
        }
    }
    let within = |secs: u64| guessed_at.iter().filter(|t| **t < secs).count();
    assert_eq!(within(1), 6, "at once: {guessed_at:?}");
    assert_eq!(within(HOUR), 18, "in the first hour: {guessed_at:?}");
    assert_eq!(within(24 * HOUR), 110, "in a day: {guessed_at:?}");
    // From then on, one guess per 15-minute lock: 4 an hour.
    let last_hour = guessed_at
        .iter()
        .filter(|t| **t >= 23 * HOUR && **t < 24 * HOUR)
        .count();
    assert_eq!(last_hour, 4, "in the last hour: {guessed_at:?}");
}

#[test]
fn forged_altered_or_foreign_device_cookies_count_as_unknown() {
    let app = app();
    let own = device_cookie(&owner(&app, "203.0.113.1", None), USER_DEVICE);
    app.user("eve@example.test", "eve-password-1");
    let eve = device_cookie(
        &login(
            &app,
            USER_LOGIN,
            "203.0.113.2",
            None,
            "eve@example.test",
            "eve-password-1",
        ),
        USER_DEVICE,
    );
    let admin = device_cookie(
        &login(
            &app,
            ADMIN_LOGIN,
            "203.0.113.3",
            None,
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
        ),
        ADMIN_DEVICE,
    );
    assert_eq!(
        guesses(&app, USER_LOGIN, OWNER_EMAIL, 7, "198.51.100"),
        [401, 401, 401, 401, 401, 401, 429]
    );

    let (nonce, signature) = own.split_once('.').expect("nonce.signature");
    let mut altered = own.clone();
    let last = if own.ends_with('0') { "1" } else { "0" };
    altered.replace_range(own.len() - 1.., last);
    let other_nonce = format!("{}.{signature}", "0".repeat(nonce.len()));
    let zeros = format!("{nonce}.{}", "0".repeat(signature.len()));
    let cases = [
        ("a signature of zeros", USER_DEVICE, zeros.as_str()),
        ("an altered signature", USER_DEVICE, altered.as_str()),
        ("another nonce", USER_DEVICE, other_nonce.as_str()),
        ("not a cookie of ours", USER_DEVICE, "trust-me"),
        ("another account's", USER_DEVICE, eve.as_str()),
        (
            "the admin realm's, as a user's",
            USER_DEVICE,
            admin.as_str(),
        ),
        (
            "the owner's, under the admin cookie's name",
            ADMIN_DEVICE,
            own.as_str(),
        ),
    ];
    for (name, cookie, value) in cases {
        let reply = login(
            &app,
            USER_LOGIN,
            "203.0.113.1",
            Some((cookie, value)),
            OWNER_EMAIL,
            OWNER_PASSWORD,
        );
        expect(&reply, 429, name);
    }
    let reply = owner(&app, "203.0.113.1", Some(&own));
    expect(&reply, 200, "the owner's own cookie");
    // Eve's cookie is still good for Eve.
    let reply = login(
        &app,
        USER_LOGIN,
        "203.0.113.2",
        Some((USER_DEVICE, &eve)),
        "eve@example.test",
        "eve-password-1",
    );
    expect(&reply, 200, "eve");
}

#[test]
fn a_device_that_fails_too_often_is_locked_alone() {
    let app = app();
    let device = |ip| {
        device_cookie(
            &login(&app, USER_LOGIN, ip, None, OWNER_EMAIL, OWNER_PASSWORD),
            USER_DEVICE,
        )
    };
    let laptop = device("203.0.113.1");
    let phone = device("203.0.113.2");
    let from = |ip: &str, cookie: Option<&str>, password: &str| {
        login(
            &app,
            USER_LOGIN,
            ip,
            cookie.map(|c| (USER_DEVICE, c)),
            OWNER_EMAIL,
            password,
        )
    };

    // Someone at the laptop guesses: six failures on the laptop's own budget lock it.
    for i in 1..=6 {
        expect(
            &from("203.0.113.1", Some(&laptop), "guess"),
            401,
            &format!("laptop failure {i}"),
        );
    }
    // They cost the account's unknown clients nothing.
    expect(
        &from("203.0.113.3", None, OWNER_PASSWORD),
        200,
        "an unknown client",
    );
    // The locked laptop is one more unknown client now: its failures count with theirs, and
    // with five from elsewhere they lock out every unknown client.
    expect(
        &from("203.0.113.1", Some(&laptop), "guess"),
        401,
        "the locked laptop's guess",
    );
    for i in 1..=5 {
        expect(
            &from(&format!("198.51.100.{i}"), None, "guess"),
            401,
            &format!("unknown failure {i}"),
        );
    }
    expect(
        &from("203.0.113.1", Some(&laptop), OWNER_PASSWORD),
        429,
        "the laptop, locked",
    );
    expect(
        &from("203.0.113.4", None, OWNER_PASSWORD),
        429,
        "an unknown client",
    );
    expect(
        &from("203.0.113.1", Some(&phone), OWNER_PASSWORD),
        200,
        "the phone, even from the laptop's address",
    );
    // Once its lock is over, the laptop has its own budget again.
    app.app.throttle.advance(Duration::from_secs(1));
    expect(
        &from("203.0.113.1", Some(&laptop), OWNER_PASSWORD),
        200,
        "the laptop after its lock",
    );
}

#[test]
fn device_cookies_are_secure_with_secure_cookies() {
    let app = crate::support::spawn_app_with(|c| c.sessions.secure_cookie = true);
    for (path, email, password, name) in [
        (USER_LOGIN, OWNER_EMAIL, OWNER_PASSWORD, USER_DEVICE),
        (ADMIN_LOGIN, ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_DEVICE),
    ] {
        let reply = login(&app, path, "203.0.113.1", None, email, password);
        expect(&reply, 200, path);
        let cookie = set_cookie(&reply, name)
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", reply.headers));
        assert!(cookie.split(';').any(|p| p.trim() == "Secure"), "{cookie}");
    }
}

/// Known devices stay known across a restart: the key that signs their cookies is kept in
/// the catalog. A second server over the same data directory (a restart, as far as the
/// catalog can tell) takes the first one's cookie.
#[test]
fn the_device_key_survives_a_restart() {
    let app = app();
    let laptop = device_cookie(&owner(&app, "203.0.113.1", None), USER_DEVICE);
    let server = spawn_serve(app.data.path(), &[], 1);
    let call = |cookie: Option<&str>, password: &str| {
        let cookie = cookie.map(|c| format!("{USER_DEVICE}={c}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let body = json!({"email": OWNER_EMAIL, "password": password});
        request_to(server.addr, "POST", USER_LOGIN, &headers, Some(&body))
    };
    for i in 1..=6 {
        expect(&call(None, "guess"), 401, &format!("failure {i}"));
    }
    expect(&call(None, OWNER_PASSWORD), 429, "an unknown client");
    let reply = call(Some(&laptop), OWNER_PASSWORD);
    expect(&reply, 200, "the device the first server knew");
    device_cookie(&reply, USER_DEVICE);
}

/// A catalog that cannot answer during a login: a 5xx, and no failure counted (with no free
/// failures, one would lock the account).
#[test]
fn a_catalog_fault_during_login_is_a_server_error_and_no_failed_attempt() {
    let app = spawn_app_full(
        |c| {
            c.throttle.free_failures = 0;
            c.throttle.frozen_clock = true;
        },
        |h| h.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
    );
    let central = app.central_db();
    central
        .execute_batch(
            "ALTER TABLE users RENAME TO users_away;
             ALTER TABLE system_admins RENAME TO system_admins_away;",
        )
        .unwrap();
    for (path, email, password) in [
        (USER_LOGIN, OWNER_EMAIL, OWNER_PASSWORD),
        (USER_LOGIN, OWNER_EMAIL, "wrong"),
        (ADMIN_LOGIN, ADMIN_EMAIL, ADMIN_PASSWORD),
        (ADMIN_LOGIN, ADMIN_EMAIL, "wrong"),
    ] {
        let reply = login(&app, path, "203.0.113.1", None, email, password);
        assert!(
            (500..600).contains(&reply.status),
            "{path} {email} {password}: {} {}",
            reply.status,
            reply.text()
        );
    }
    central
        .execute_batch(
            "ALTER TABLE users_away RENAME TO users;
             ALTER TABLE system_admins_away RENAME TO system_admins;",
        )
        .unwrap();
    let reply = owner(&app, "203.0.113.1", None);
    expect(&reply, 200, "the owner once the catalog is back");
    let reply = login(
        &app,
        ADMIN_LOGIN,
        "203.0.113.1",
        None,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
    );
    expect(&reply, 200, "the admin once the catalog is back");
}

/// Writes that name a user ask the catalog whether the user is a member of the tenant; when
/// the catalog cannot tell (here: the user's role row is unreadable), that is a 5xx, not a
/// `422` saying the user is no member.
#[test]
fn a_catalog_fault_in_a_member_check_is_a_server_error() {
    let app = app();
    app.create_tenant("acme", &[]);
    app.create_role("acme", "crew", &["chats_create"]);
    let (crew, _) = app.member("crew@acme.test", "acme", "crew");
    let (viewer, _) = app.member("viewer@acme.test", "acme", "viewer");
    let owner = app.owner_token.clone();
    let chat = |participant: i64| {
        let body = json!({"title": "t", "kind": "group", "participant_ids": [participant]});
        app.on(&owner, "acme", "POST", "/api/chats", Some(body))
    };
    let order = |assigned_to: i64| {
        let body = json!({
            "title": "t", "customer_name": "Ada", "currency": "EUR", "amount_minor": 1,
            "assigned_to": assigned_to,
        });
        app.on(&owner, "acme", "POST", "/api/orders", Some(body))
    };
    expect(&chat(crew), 201, "a chat with a member");
    expect(&order(crew), 201, "an order for a member");
    expect(&chat(viewer + 100), 422, "a chat with no member");
    expect(&order(viewer + 100), 422, "an order for no member");

    app.central_db()
        .execute(
            "UPDATE roles SET permissions = '[1]' WHERE name = 'crew'",
            [],
        )
        .unwrap();
    for (what, reply) in [
        ("a chat with the crew member", chat(crew)),
        ("an order for the crew member", order(crew)),
    ] {
        assert!(
            (500..600).contains(&reply.status),
            "{what}: {} {}",
            reply.status,
            reply.text()
        );
    }
    // Members the catalog can still read are checked as before.
    expect(&chat(viewer), 201, "a chat with a viewer");
    expect(&chat(viewer + 100), 422, "a chat with no member");
}
