//! The pods the service knows: their manifests, the images of their apps, the token in their
//! `AC_METADATA_URL` and the HMAC key of their identity.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use appc::{ImageManifest, PodManifest};
use hmac::{Hmac, Mac};
use sha2::Sha512;

use crate::MdsError;

/// Most pods registered at once (count); a registration beyond it is refused.
pub const MAX_PODS: usize = 4096;
/// Bytes of random data in a generated token (hex-encoded in URLs: 64 characters, 256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Fewest hex characters a registered token must have (128 bits, the appc recommendation).
pub const MIN_TOKEN_CHARS: usize = 32;
/// Most characters a registered token may have.
pub const MAX_TOKEN_CHARS: usize = 128;
/// Bytes of a pod's HMAC-SHA512 key (the hash's block size).
const KEY_BYTES: usize = 128;

type HmacSha512 = Hmac<Sha512>;

/// A new random token for a pod's `AC_METADATA_URL` (hex, [`TOKEN_BYTES`] of entropy).
pub fn new_token() -> Result<String, MdsError> {
    let mut b = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut b).map_err(|e| MdsError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Whether `token` is acceptable: hex, [`MIN_TOKEN_CHARS`]..=[`MAX_TOKEN_CHARS`] long, and not the
/// pod's UUID (with or without dashes).
pub fn valid_token(token: &str, uuid: &str) -> bool {
    (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_hexdigit())
        && !token.eq_ignore_ascii_case(&uuid.replace('-', ""))
}

/// A manifest error with its cause (`invalid manifest: labels[0]: ...`).
fn manifest_error(e: &appc::ManifestError) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// Whether `s` is an RFC 4122 UUID in its canonical 8-4-4-4-12 hex form.
pub fn valid_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// One app of a registered pod.
#[derive(Debug, Clone)]
pub struct AppEntry {
    /// The image manifest as registered (served as is).
    pub image_manifest_json: Vec<u8>,
    /// The same, parsed.
    pub image_manifest: ImageManifest,
}

/// One registered pod.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// The pod's UUID.
    pub uuid: String,
    /// The token in its `AC_METADATA_URL`.
    pub token: String,
    /// The pod manifest as registered (served as is).
    pub manifest_json: Vec<u8>,
    /// The same, parsed.
    pub manifest: PodManifest,
    /// Apps whose image manifest was registered, by app name.
    pub apps: HashMap<String, AppEntry>,
    key: [u8; KEY_BYTES],
}

impl PodEntry {
    fn mac(&self) -> HmacSha512 {
        // HMAC takes keys of any length.
        HmacSha512::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// The pod's HMAC-SHA512 of `content` (64 bytes).
    pub fn sign(&self, content: &[u8]) -> Vec<u8> {
        let mut m = self.mac();
        m.update(content);
        m.finalize().into_bytes().to_vec()
    }

    /// Whether `signature` is the pod's HMAC of `content` (constant-time comparison).
    pub fn verify(&self, content: &[u8], signature: &[u8]) -> bool {
        let mut m = self.mac();
        m.update(content);
        m.verify_slice(signature).is_ok()
    }
}

#[derive(Default)]
struct Inner {
    by_uuid: HashMap<String, Arc<PodEntry>>,
    by_token: HashMap<String, String>,
}

/// The registry, shared by the public and the registration server threads.
pub struct Registry {
    inner: RwLock<Inner>,
    public_port: u16,
}

impl Registry {
    /// An empty registry of a service whose public side listens on `public_port` (told to
    /// registering clients, which put it in the pod's `AC_METADATA_URL`).
    pub fn new(public_port: u16) -> Self {
        Registry {
            inner: RwLock::default(),
            public_port,
        }
    }

    /// The public side's port.
    pub fn public_port(&self) -> u16 {
        self.public_port
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or re-registers, replacing its apps) pod `uuid` with `token` and its manifest.
    pub fn register_pod(
        &self,
        uuid: &str,
        token: &str,
        manifest_json: &[u8],
    ) -> Result<(), MdsError> {
        if !valid_uuid(uuid) {
            return Err(MdsError::BadRequest(format!("invalid pod UUID {uuid:?}")));
        }
        if !valid_token(token, uuid) {
            return Err(MdsError::BadRequest(format!(
                "the token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} hex characters and not the UUID"
            )));
        }
        let manifest = PodManifest::from_json(manifest_json).map_err(|e| {
            MdsError::BadRequest(format!("invalid pod manifest: {}", manifest_error(&e)))
        })?;
        let mut key = [0u8; KEY_BYTES];
        getrandom::getrandom(&mut key).map_err(|e| MdsError::Random(e.to_string()))?;
        let entry = PodEntry {
            uuid: uuid.to_string(),
            token: token.to_string(),
            manifest_json: manifest_json.to_vec(),
            manifest,
            apps: HashMap::new(),
            key,
        };
        let mut g = self.write();
        if let Some(owner) = g.by_token.get(token) {
            if owner != uuid {
                return Err(MdsError::Conflict(
                    "the token is in use by another pod".into(),
                ));
            }
        }
        if !g.by_uuid.contains_key(uuid) && g.by_uuid.len() >= MAX_PODS {
            return Err(MdsError::Conflict(format!(
                "{MAX_PODS} pods are registered already"
            )));
        }
        if let Some(old) = g.by_uuid.insert(uuid.to_string(), Arc::new(entry)) {
            g.by_token.remove(&old.token);
        }
        g.by_token.insert(token.to_string(), uuid.to_string());
        Ok(())
    }

    /// Registers the image manifest of app `app` of pod `uuid` (the app must be in its manifest).
    pub fn register_app(&self, uuid: &str, app: &str, image_json: &[u8]) -> Result<(), MdsError> {
        let image_manifest = ImageManifest::from_json(image_json).map_err(|e| {
            MdsError::BadRequest(format!("invalid image manifest: {}", manifest_error(&e)))
        })?;
        let mut g = self.write();
        let Some(pod) = g.by_uuid.get_mut(uuid) else {
            return Err(MdsError::NotFound(format!("pod {uuid} is not registered")));
        };
        if !pod.manifest.apps.iter().any(|a| a.name.as_str() == app) {
            return Err(MdsError::NotFound(format!("pod {uuid} has no app {app:?}")));
        }
        // Readers keep the Arc they hold; the new entry replaces it for later requests.
        let mut entry = (**pod).clone();
        entry.apps.insert(
            app.to_string(),
            AppEntry {
                image_manifest_json: image_json.to_vec(),
                image_manifest,
            },
        );
        *pod = Arc::new(entry);
        Ok(())
    }

    /// Forgets pod `uuid`; whether it was registered.
    pub fn unregister_pod(&self, uuid: &str) -> bool {
        let mut g = self.write();
        match g.by_uuid.remove(uuid) {
            Some(p) => {
                g.by_token.remove(&p.token);
                true
            }
            None => false,
        }
    }

    /// The pod whose token is `token`.
    pub fn by_token(&self, token: &str) -> Option<Arc<PodEntry>> {
        let g = self.read();
        let uuid = g.by_token.get(token)?;
        g.by_uuid.get(uuid).cloned()
    }

    /// The pod `uuid`.
    pub fn by_uuid(&self, uuid: &str) -> Option<Arc<PodEntry>> {
        self.read().by_uuid.get(uuid).cloned()
    }

    /// Registered pods (count).
    pub fn len(&self) -> usize {
        self.read().by_uuid.len()
    }

    /// Whether no pod is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
