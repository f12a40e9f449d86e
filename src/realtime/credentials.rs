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
        let get = |k: &str| catalog.meta_get(k);
        if let (Some(app_id), Some(key), Some(secret)) = (
            get("realtime_app_id")?,
            get("realtime_key")?,
            get("realtime_secret")?,
        ) {
            return Ok(Credentials {
                app_id,
                key,
                secret,
            });
        }
        let app_id = (100_000 + rand::random::<u32>() % 900_000).to_string();
        let key = hex::encode(rand::random::<[u8; 10]>());
        let secret = hex::encode(rand::random::<[u8; 20]>());
        catalog.meta_set("realtime_app_id", &app_id)?;
        catalog.meta_set("realtime_key", &key)?;
        catalog.meta_set("realtime_secret", &secret)?;
        Ok(Credentials {
            app_id,
            key,
            secret,
        })
    }
}
