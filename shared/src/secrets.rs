//! Secrets: the install's secret key, encryption of credentials at rest (AES-256-GCM), the
//! SCRAM-SHA-256 verifier we give Postgres instead of a plain password, and URL redaction.
//! Nothing in here implements `Display` or `Debug` for a secret value.

use aes_gcm::aead::{Aead, KeyInit};
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

/// The 32-byte key that encrypts tenant and server credentials in the catalog.
pub struct SecretKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
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
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(SecretBox::new(Box::new(key)))
    }

    /// The base64 text form; only for writing the key file or printing on request.
    pub fn to_base64(&self) -> SecretString {
        STANDARD.encode(self.0.expose_secret()).into()
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

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(self.0.expose_secret().into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + 16 {
            bail!("encrypted value is truncated");
        }
        let cipher = Aes256Gcm::new(self.0.expose_secret().into());
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| {
            anyhow::anyhow!(
                "cannot decrypt a stored credential: this process's PGFLEET_SECRET_KEY is not the key the catalog was written with"
            )
        })
    }

    pub fn encrypt_str(&self, secret: &SecretString) -> Vec<u8> {
        self.encrypt(secret.expose_secret().as_bytes())
    }

    pub fn decrypt_string(&self, sealed: &[u8]) -> Result<SecretString> {
        let bytes = self.decrypt(sealed)?;
        let text = String::from_utf8(bytes).context("stored credential is not UTF-8")?;
        Ok(text.into())
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

/// Whether `verifier` (as stored in `pg_authid.rolpassword`) was made from `password`.
pub fn scram_verifier_matches(password: &SecretString, verifier: &str) -> bool {
    let parse = || -> Option<bool> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let salt = STANDARD.decode(salt).ok()?;
        let (stored_key, server_key) = scram_keys(password, &salt, iterations.parse().ok()?);
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
        let key = SecretKey::generate();
        let sealed = key.encrypt(b"hunter2");
        assert_eq!(key.decrypt(&sealed).unwrap(), b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let other = SecretKey::generate();
        assert!(other.decrypt(&sealed).is_err());
        let reparsed = SecretKey::parse(key.to_base64().expose_secret()).unwrap();
        assert_eq!(reparsed.decrypt(&sealed).unwrap(), b"hunter2");
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
    }
}
