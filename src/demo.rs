//! `tenantd serve --demo`: two companies with people in every built-in role, chats and orders, so
//! a newcomer has something to log in to. Safe to run again: what exists is left alone.

use crate::api::App;
use crate::auth::password;
use crate::catalog::{NewUser, TenantStatus};
use crate::tenancy::lifecycle::{self, NewTenant};
use crate::workspace;

/// Every demo account's password. A demo is for trying things out on one's own machine.
pub const PASSWORD: &str = "demo-password";

const COMPANIES: [(&str, &str, &str); 2] = [
    ("acme", "Acme Inc", "acme.test"),
    ("globex", "Globex Corporation", "globex.test"),
];

/// (tenant, role)
type Roles = &'static [(&'static str, &'static str)];

/// (email, name, surname, roles)
const PEOPLE: [(&str, &str, &str, Roles); 8] = [
    ("alice@acme.test", "Alice", "Admin", &[("acme", "admin")]),
    ("mike@acme.test", "Mike", "Manager", &[("acme", "manager")]),
    ("ada@acme.test", "Ada", "Agent", &[("acme", "agent")]),
    ("vic@acme.test", "Vic", "Viewer", &[("acme", "viewer")]),
    ("gina@globex.test", "Gina", "Admin", &[("globex", "admin")]),
    ("gus@globex.test", "Gus", "Agent", &[("globex", "agent")]),
    ("val@globex.test", "Val", "Viewer", &[("globex", "viewer")]),
    // One person in both companies, with a different role in each.
    (
        "sam@example.test",
        "Sam",
        "Both",
        &[("acme", "manager"), ("globex", "agent")],
    ),
];

/// Creates whatever of the demo is missing and returns how to log in.
pub fn ensure(app: &App) -> Result<String, String> {
    let catalog = &app.catalog;
    for (slug, name, domain) in COMPANIES {
        match catalog.by_slug(slug).map_err(|e| e.to_string())? {
            Some(t) if t.status == TenantStatus::Active => {}
            Some(t) => return Err(format!("demo tenant {slug} exists but is {}", t.status)),
            None => {
                lifecycle::create(
                    catalog,
                    &NewTenant {
                        slug: slug.into(),
                        name: name.into(),
                        domains: vec![domain.into()],
                    },
                )
                .map_err(|e| e.to_string())?;
            }
        }
    }
    let hash = password::hash(PASSWORD).map_err(|e| e.to_string())?;
    for (email, name, surname, memberships) in PEOPLE {
        let user = match catalog.user_by_email(email).map_err(|e| e.to_string())? {
            Some(user) => user,
            None => catalog
                .create_user(&NewUser {
                    email: email.into(),
                    name: name.into(),
                    surname: surname.into(),
                    photo_url: None,
                    password_hash: hash.clone(),
                })
                .map_err(|e| e.to_string())?,
        };
        for (slug, role) in memberships.iter() {
            let tenant = catalog
                .by_slug(slug)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("demo tenant {slug} is missing"))?;
            if catalog
                .membership(user.id, &tenant.id)
                .map_err(|e| e.to_string())?
                .is_none()
            {
                catalog
                    .add_member(&tenant.id, user.id, role)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let mut rng = rand::thread_rng();
    for (slug, _, _) in COMPANIES {
        let record = catalog
            .by_slug(slug)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("demo tenant {slug} is missing"))?;
        let members: Vec<i64> = catalog
            .members(&record.id)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|m| m.user.id)
            .collect();
        let tenant = app.registry.open(record).map_err(|e| e.to_string())?;
        workspace::seed_demo(&tenant, &members, &mut rng).map_err(|e| e.to_string())?;
    }
    let mut out = String::from("demo: companies acme (acme.test) and globex (globex.test)\n");
    out.push_str(&format!("  every demo account's password: {PASSWORD}\n"));
    for (email, _, _, memberships) in PEOPLE {
        let roles: Vec<String> = memberships
            .iter()
            .map(|(t, r)| format!("{r} of {t}"))
            .collect();
        out.push_str(&format!("  {email:<20} {}\n", roles.join(", ")));
    }
    Ok(out)
}
