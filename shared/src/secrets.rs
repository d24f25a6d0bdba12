//! Secrets: the install's secret keys, encryption of credentials at rest (AES-256-GCM), the
//! SCRAM-SHA-256 verifier we give Postgres instead of a plain password, and URL redaction.
//! Nothing in here implements `Display` or `Debug` for a secret value.
//!
//! A stored ciphertext names the key that sealed it (`MAGIC ‖ key id ‖ nonce ‖ sealed`) and
//! is bound to its row: the AEAD's associated data is the table, column and row id
//! (`Binding`), so a ciphertext copied to another row fails to decrypt. A process holds a
//! `Keyring`: the current key, which seals, and previous keys, which only open — that is
//! what lets keys rotate without downtime (`Catalog::rotate_secrets`). Ciphertexts written
//! before key ids existed (`nonce ‖ sealed`, no binding) are still read, and rewritten in
//! the new form by a rotation.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use std::path::Path;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// First bytes of every ciphertext that names its key (format 1).
const MAGIC: &[u8; 4] = b"pfk\x01";
const KEY_ID_LEN: usize = 8;
/// `MAGIC ‖ key id`: what a ciphertext sealed with a given key starts with.
pub const SEALED_HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN;

/// Short public fingerprint of a key (SHA-256 of a label and the key, first 8 bytes): it
/// names the key in ciphertexts and messages without revealing anything about it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes every ciphertext sealed with this key starts with.
    pub fn sealed_header(&self) -> Vec<u8> {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&self.0);
        header
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What a ciphertext is bound to: the AEAD associated data. Decrypting with another binding
/// fails, so a ciphertext moved to another row (or column, or table) is useless there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding(String);

impl Binding {
    pub fn tenant_password(tenant_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenants.password_ciphertext:{tenant_id}"))
    }

    pub fn server_admin_url(server_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenant_servers.admin_url_ciphertext:{server_id}"))
    }

    pub fn server_api_key(server_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenant_servers.api_key_ciphertext:{server_id}"))
    }

    pub fn tenant_direct_uri(tenant_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenants.direct_uri_ciphertext:{tenant_id}"))
    }

    pub fn tenant_pooled_uri(tenant_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenants.pooled_uri_ciphertext:{tenant_id}"))
    }

    pub fn branch_uri(branch_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:tenant_branches.uri_ciphertext:{branch_id}"))
    }

    pub fn webhook_url(webhook_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:webhooks.url_ciphertext:{webhook_id}"))
    }

    pub fn webhook_secret(webhook_id: uuid::Uuid) -> Self {
        Self(format!("pgfleet:webhooks.secret_ciphertext:{webhook_id}"))
    }

    pub fn setting(name: &str) -> Self {
        Self(format!("pgfleet:settings.value:{name}"))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// One 32-byte key.
pub struct SecretKey {
    bytes: SecretBox<[u8; 32]>,
    id: KeyId,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(id {}, [redacted])", self.id)
    }
}

impl SecretKey {
    fn from_bytes(key: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"pgfleet secret key id v1\0");
        hasher.update(key);
        let digest = hasher.finalize();
        let id = KeyId(
            digest[..KEY_ID_LEN]
                .try_into()
                .expect("8 bytes of a 32-byte digest"),
        );
        Self {
            bytes: SecretBox::new(Box::new(key)),
            id,
        }
    }

    /// Parses the base64 text form (`PGFLEET_SECRET_KEY`, or the key file's content).
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim()))
            .map_err(|_| {
                anyhow::anyhow!("the secret key is not valid base64; generate one with `pgfleet secret-key`")
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| {
            anyhow::anyhow!(
                "the secret key is {} bytes, expected 32; generate one with `pgfleet secret-key`",
                v.len()
            )
        })?;
        Ok(Self::from_bytes(key))
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The base64 text form; only for writing the key file or printing on request.
    pub fn to_base64(&self) -> SecretString {
        STANDARD.encode(self.bytes.expose_secret()).into()
    }

    /// Reads a key file, or creates one (mode 0600) with a fresh key. Returns whether it was created.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((
                Self::parse(&text)
                    .with_context(|| format!("reading the secret key file {}", path.display()))?,
                false,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let key = Self::generate();
                write_private_file(path, key.to_base64().expose_secret().as_bytes())?;
                Ok((key, true))
            }
            Err(e) => Err(e).with_context(|| format!("reading the secret key file {}", path.display())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.bytes.expose_secret().into())
    }

    /// `MAGIC ‖ key id ‖ nonce ‖ AES-256-GCM(plaintext, aad = binding)`.
    fn seal(&self, plaintext: &[u8], binding: &Binding) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: binding.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = self.id.sealed_header();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, body: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }
}

/// The keys one process holds: `current` seals, every key opens what it sealed.
pub struct Keyring {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring(current {}, previous {:?})",
            self.current.id,
            self.previous_ids()
        )
    }
}

impl From<SecretKey> for Keyring {
    fn from(current: SecretKey) -> Self {
        Self::new(current, Vec::new())
    }
}

impl Keyring {
    /// `previous` are accepted for decryption only; duplicates of `current` are dropped.
    pub fn new(current: SecretKey, previous: Vec<SecretKey>) -> Self {
        let mut kept: Vec<SecretKey> = Vec::new();
        for key in previous {
            if key.id != current.id && !kept.iter().any(|k| k.id == key.id) {
                kept.push(key);
            }
        }
        Self {
            current,
            previous: kept,
        }
    }

    pub fn current(&self) -> &SecretKey {
        &self.current
    }

    pub fn current_id(&self) -> KeyId {
        self.current.id
    }

    pub fn previous_ids(&self) -> Vec<KeyId> {
        self.previous.iter().map(|k| k.id).collect()
    }

    fn key(&self, id: KeyId) -> Option<&SecretKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    pub fn encrypt(&self, plaintext: &[u8], binding: &Binding) -> Vec<u8> {
        self.current.seal(plaintext, binding)
    }

    pub fn encrypt_str(&self, secret: &SecretString, binding: &Binding) -> Vec<u8> {
        self.encrypt(secret.expose_secret().as_bytes(), binding)
    }

    /// Opens a ciphertext sealed for `binding` by any key of this ring.
    pub fn decrypt(&self, sealed: &[u8], binding: &Binding) -> Result<Vec<u8>> {
        if let Some(id) = sealed_key_id(sealed) {
            if let Some(key) = self.key(id) {
                return key
                    .open(&sealed[SEALED_HEADER_LEN..], binding.as_bytes())
                    .context("cannot decrypt a stored credential: it does not belong to this row (it was moved or altered)");
            }
        }
        // Format 0 (no key id, no binding), written before rotation existed.
        if let Some(plain) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|k| k.open(sealed, b""))
        {
            return Ok(plain);
        }
        match sealed_key_id(sealed) {
            Some(id) => bail!(
                "cannot decrypt a stored credential: it was encrypted with key {id}, which this process does not hold \
                 (it holds {}); set PGFLEET_SECRET_KEY (and PGFLEET_SECRET_KEY_PREVIOUS during a rotation) as on the other processes",
                self.held_ids()
            ),
            None => bail!(
                "cannot decrypt a stored credential: this process's PGFLEET_SECRET_KEY is not the key the catalog was written with"
            ),
        }
    }

    pub fn decrypt_string(&self, sealed: &[u8], binding: &Binding) -> Result<SecretString> {
        let bytes = self.decrypt(sealed, binding)?;
        let text = String::from_utf8(bytes).context("stored credential is not UTF-8")?;
        Ok(text.into())
    }

    fn held_ids(&self) -> String {
        std::iter::once(self.current.id)
            .chain(self.previous_ids())
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The key id a ciphertext names, if it is in the current format.
pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.len() >= SEALED_HEADER_LEN + NONCE_LEN + TAG_LEN && sealed.starts_with(MAGIC) {
        KeyId::from_slice(&sealed[MAGIC.len()..SEALED_HEADER_LEN])
    } else {
        None
    }
}

/// Where a process's keys come from (flags and their `PGFLEET_SECRET_KEY*` twins).
pub struct KeySource<'a> {
    /// `PGFLEET_SECRET_KEY`: the current key, base64.
    pub key: Option<&'a str>,
    /// `PGFLEET_SECRET_KEY_PREVIOUS`: other keys accepted for decryption, comma-separated.
    pub previous: Option<&'a str>,
    /// `PGFLEET_SECRET_KEY_FILE`, else `<data dir>/secret.key`.
    pub file: std::path::PathBuf,
}

impl KeySource<'_> {
    /// The keyring, or `None` when no key is configured at all (commands that work without).
    pub fn load_optional(&self) -> Result<Option<Keyring>> {
        if self.key.is_none() && !self.file.exists() {
            return Ok(None);
        }
        self.load(false).map(|(ring, _)| Some(ring))
    }

    /// The keyring; with `create` (`pgfleet up`), a missing key file is created with a new
    /// key. Returns whether it was.
    pub fn load(&self, create: bool) -> Result<(Keyring, bool)> {
        let previous = self
            .previous
            .unwrap_or_default()
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(|k| SecretKey::parse(k).context("PGFLEET_SECRET_KEY_PREVIOUS"))
            .collect::<Result<Vec<_>>>()?;
        let (current, created) = match self.key {
            Some(text) => (SecretKey::parse(text).context("PGFLEET_SECRET_KEY")?, false),
            None if create => SecretKey::load_or_create_file(&self.file)?,
            None => match std::fs::read_to_string(&self.file) {
                Ok(text) => (
                    SecretKey::parse(&text).with_context(|| format!("reading {}", self.file.display()))?,
                    false,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "no secret key: set PGFLEET_SECRET_KEY (the key every pgfleet process of this install shares; \
                     a new one comes from `pgfleet secret-key`), or run `pgfleet up` once here to create {}",
                    self.file.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.file.display())),
            },
        };
        Ok((Keyring::new(current, previous), created))
    }
}

fn write_private_file(path: &Path, content: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the secret key file {}", path.display()))?;
    file.write_all(content)?;
    file.sync_all()?;
    Ok(())
}

/// A fresh random password for a tenant role: 32 random bytes, URL-safe base64 (43 chars),
/// so it needs no escaping in a connection URL.
pub fn generate_password() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes).into()
}

/// The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5802/7677, as libpq's
/// `PQencryptPasswordConn` computes it). Sending the verifier instead of the password keeps
/// the plain password out of the server's statement logs and `pg_stat_activity`.
pub fn scram_sha256_verifier(password: &SecretString) -> SecretString {
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let (stored_key, server_key) = scram_keys(password, &salt, ITERATIONS);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
    .into()
}

/// Most PBKDF2 iterations pgfleet computes to check a stored verifier. The role can set its
/// own verifier, so the count is the tenant's choice: 2^31 would cost hours of CPU on every
/// check. A verifier above this counts as not matching, and the password is set again.
pub const MAX_SCRAM_ITERATIONS: u32 = 100_000;

/// Whether `verifier` (as stored in `pg_authid.rolpassword`) was made from `password`. CPU
/// heavy (up to `MAX_SCRAM_ITERATIONS` rounds): call it off the async runtime.
pub fn scram_verifier_matches(password: &SecretString, verifier: &str) -> bool {
    let parse = || -> Option<bool> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 || iterations > MAX_SCRAM_ITERATIONS {
            return Some(false);
        }
        let salt = STANDARD.decode(salt).ok()?;
        let (stored_key, server_key) = scram_keys(password, &salt, iterations);
        Some(STANDARD.decode(stored).ok()? == stored_key && STANDARD.decode(server).ok()? == server_key)
    };
    parse().unwrap_or(false)
}

fn scram_keys(password: &SecretString, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.expose_secret().as_bytes(), salt, iterations, &mut salted)
        .expect("HMAC accepts any key length");
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (stored_key, hmac_sha256(&salted, b"Server Key"))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A URL with its password (and any `password=` query parameter) replaced by `***`: the
/// only form of a connection URL that may appear in a log, error or `--json` output.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = matches!(k.as_ref(), "password" | "sslpassword" | "token");
                        (
                            k.into_owned(),
                            if secret { "***".to_owned() } else { v.into_owned() },
                        )
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Reads a token from `path`, or creates the file (mode 0600) with a new random token.
/// Returns the token and whether it was created.
pub fn load_or_create_token_file(path: &Path) -> Result<(SecretString, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((SecretString::from(text.trim().to_owned()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private_file(path, token.as_bytes())?;
            Ok((SecretString::from(token), true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_round_trip_and_wrong_key() {
        let key = Keyring::from(SecretKey::generate());
        let row = Binding::tenant_password(uuid::Uuid::now_v7());
        let sealed = key.encrypt(b"hunter2", &row);
        assert_eq!(key.decrypt(&sealed, &row).unwrap(), b"hunter2");
        assert_eq!(sealed_key_id(&sealed), Some(key.current_id()));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let other = Keyring::from(SecretKey::generate());
        let err = other.decrypt(&sealed, &row).unwrap_err().to_string();
        assert!(err.contains(&key.current_id().to_string()), "{err}");
        let reparsed = Keyring::from(SecretKey::parse(key.current().to_base64().expose_secret()).unwrap());
        assert_eq!(reparsed.decrypt(&sealed, &row).unwrap(), b"hunter2");
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
        let key = Keyring::from(SecretKey::generate());
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let sealed_a = key.encrypt(b"a's password", &Binding::tenant_password(a));
        assert!(key.decrypt(&sealed_a, &Binding::tenant_password(b)).is_err());
        assert!(key.decrypt(&sealed_a, &Binding::server_admin_url(a)).is_err());
        let mut flipped = sealed_a.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.decrypt(&flipped, &Binding::tenant_password(a)).is_err());
    }

    #[test]
    fn previous_keys_open_but_never_seal() {
        let old = SecretKey::generate();
        let old_id = old.id();
        let old_ring = Keyring::from(SecretKey::parse(old.to_base64().expose_secret()).unwrap());
        let row = Binding::setting("x");
        let sealed_old = old_ring.encrypt(b"v", &row);
        let ring = Keyring::new(SecretKey::generate(), vec![old]);
        assert_eq!(ring.decrypt(&sealed_old, &row).unwrap(), b"v");
        assert_eq!(ring.previous_ids(), vec![old_id]);
        assert_eq!(sealed_key_id(&ring.encrypt(b"v", &row)), Some(ring.current_id()));
    }

    #[test]
    fn format_zero_ciphertexts_are_still_read() {
        // nonce ‖ sealed, no key id, no associated data: what earlier versions stored.
        let key = SecretKey::generate();
        let nonce = [7u8; NONCE_LEN];
        let mut legacy = nonce.to_vec();
        legacy.extend(
            key.cipher()
                .encrypt(Nonce::from_slice(&nonce), &b"old"[..])
                .unwrap(),
        );
        let ring = Keyring::from(key);
        assert_eq!(sealed_key_id(&legacy), None);
        assert_eq!(ring.decrypt(&legacy, &Binding::setting("any")).unwrap(), b"old");
    }

    #[test]
    fn key_parse_errors_are_clear() {
        assert!(SecretKey::parse("not base64!").is_err());
        assert!(SecretKey::parse(&STANDARD.encode([1u8; 16]))
            .unwrap_err()
            .to_string()
            .contains("16 bytes"));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db?sslmode=require&password=x"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("amqp://guest@h/%2f"), "amqp://guest@h/%2f");
        assert!(!redact_url("garbage s3cret").contains("s3cret"));
    }

    #[test]
    fn scram_verifier_shape() {
        let v = scram_sha256_verifier(&"pw".to_owned().into());
        let v = v.expose_secret();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("pw$"));
        assert!(scram_verifier_matches(&"pw".to_owned().into(), v));
        assert!(!scram_verifier_matches(&"other".to_owned().into(), v));
        assert!(!scram_verifier_matches(&"pw".to_owned().into(), "md5abc"));
        // Over the cap: not even computed (2^31 rounds would take minutes here).
        let hostile = v.replacen("SCRAM-SHA-256$4096:", "SCRAM-SHA-256$2147483647:", 1);
        let started = std::time::Instant::now();
        assert!(!scram_verifier_matches(&"pw".to_owned().into(), &hostile));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
