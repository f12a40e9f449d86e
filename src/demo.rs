//! `tenantd serve --demo`: two companies with people in every built-in role, chats and orders, so
//! a newcomer has something to log in to. Safe to run again: what exists is left alone.

use crate::api::App;
use crate::auth::password;
use crate::catalog::{NewUser, TenantStatus};
use crate::tenancy::lifecycle::{self, LifecycleError, NewTenant};
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

/// What the demo did: the text to print, and whom to suggest logging in as.
pub struct Demo {
    pub summary: String,
    /// (email, slug) of a demo admin, if acme is the demo's.
    pub try_as: Option<(&'static str, &'static str)>,
    /// The slugs of the demo's own companies, whose workspaces it has filled.
    pub companies: Vec<String>,
}

/// Creates whatever of the demo is missing and returns how to log in. Only companies the demo
/// created itself (marked so in their own file) get its people, chats and orders: a tenant
/// with a demo slug that someone else made is skipped, and said so.
pub fn ensure(app: &App) -> Result<Demo, String> {
    let catalog = &app.catalog;
    let mut owned = Vec::new();
    let mut out = String::new();
    for (slug, name, domain) in COMPANIES {
        let existing = catalog.by_slug(slug).map_err(|e| e.to_string())?;
        let skip = match existing {
            Some(t) if t.status != TenantStatus::Active => Some(format!("it is {}", t.status)),
            Some(t) => {
                let tenant = app.registry.open(t).map_err(|e| e.to_string())?;
                if workspace::is_demo(&tenant).map_err(|e| e.to_string())? {
                    owned.push(tenant);
                    None
                } else {
                    Some("a tenant with this slug exists that the demo did not create".into())
                }
            }
            None => {
                let new = NewTenant {
                    slug: slug.into(),
                    name: name.into(),
                    domains: vec![domain.into()],
                };
                match lifecycle::create(catalog, &new) {
                    Ok(record) => {
                        let tenant = app.registry.open(record).map_err(|e| e.to_string())?;
                        workspace::mark_demo(&tenant).map_err(|e| e.to_string())?;
                        owned.push(tenant);
                        None
                    }
                    // A slug or domain someone else uses: the rest of the demo can still go on.
                    Err(e @ (LifecycleError::SlugTaken(_) | LifecycleError::DomainTaken(_))) => {
                        Some(e.to_string())
                    }
                    // Anything else is a fault, not a reason to skip.
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        if let Some(reason) = skip {
            out.push_str(&format!(
                "demo: skipped {slug} ({reason}); nothing of the demo was added to it\n"
            ));
        }
    }
    let is_owned = |slug: &str| owned.iter().any(|t| t.slug() == slug);
    let hash = password::hash(PASSWORD).map_err(|e| e.to_string())?;
    let mut accounts = String::new();
    for (email, name, surname, memberships) in PEOPLE {
        let memberships: Vec<&(&str, &str)> =
            memberships.iter().filter(|(t, _)| is_owned(t)).collect();
        if memberships.is_empty() {
            continue;
        }
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
        for (slug, role) in &memberships {
            let tenant = owned
                .iter()
                .find(|t| t.slug() == *slug)
                .ok_or_else(|| format!("demo tenant {slug} is missing"))?;
            if catalog
                .membership(user.id, tenant.id())
                .map_err(|e| e.to_string())?
                .is_none()
            {
                catalog
                    .add_member(tenant.id(), user.id, role)
                    .map_err(|e| e.to_string())?;
            }
        }
        let roles: Vec<String> = memberships
            .iter()
            .map(|(t, r)| format!("{r} of {t}"))
            .collect();
        accounts.push_str(&format!("  {email:<20} {}\n", roles.join(", ")));
    }
    let mut rng = rand::thread_rng();
    for tenant in &owned {
        let members: Vec<i64> = catalog
            .members(tenant.id())
            .map_err(|e| e.to_string())?
            .iter()
            .map(|m| m.user.id)
            .collect();
        if members.is_empty() {
            continue;
        }
        workspace::seed_demo(tenant, &members, &mut rng).map_err(|e| e.to_string())?;
    }
    if !owned.is_empty() {
        let companies: Vec<String> = owned
            .iter()
            .map(|t| {
                let domain = COMPANIES
                    .iter()
                    .find(|(s, _, _)| *s == t.slug())
                    .map_or("", |(_, _, d)| d);
                format!("{} ({domain})", t.slug())
            })
            .collect();
        out.push_str(&format!("demo: companies {}\n", companies.join(" and ")));
        out.push_str(&format!("  every demo account's password: {PASSWORD}\n"));
        out.push_str(&accounts);
    }
    Ok(Demo {
        summary: out,
        try_as: is_owned("acme").then_some(("alice@acme.test", "acme")),
        companies: owned.iter().map(|t| t.slug().to_string()).collect(),
    })
}
