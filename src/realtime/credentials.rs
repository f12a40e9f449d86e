//! The Pusher app (id, key, secret) the real-time channels speak for, kept in the catalog.

use crate::catalog::{Catalog, CatalogError};

/// The Pusher app the real-time channels speak for: made on first run, kept in the catalog.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Credentials {
    pub app_id: String,
    pub key: String,
    #[serde(skip_serializing)]
    pub secret: String,
}

impl Credentials {
    /// The stored credentials, made and stored first if there are none.
    pub fn load_or_create(catalog: &Catalog) -> Result<Credentials, CatalogError> {
        // Each made once whoever asks first: nodes of a shared catalog starting together end up
        // with one app, which the Redis bridge and the clients' signatures need.
        let app_id = catalog.meta_get_or_init("realtime_app_id", || {
            (100_000 + rand::random::<u32>() % 900_000).to_string()
        })?;
        let key =
            catalog.meta_get_or_init("realtime_key", || hex::encode(rand::random::<[u8; 10]>()))?;
        let secret = catalog.meta_get_or_init("realtime_secret", || {
            hex::encode(rand::random::<[u8; 20]>())
        })?;
        Ok(Credentials {
            app_id,
            key,
            secret,
        })
    }
}
