//! The certificate state directory: `<base>/<domain>/` with the installed certificate and
//! key (`current/`), the one before (`previous/`, for restoring), a newly issued one not
//! yet installed (`pending/`), `renewal.json` (timing, ARI window, failures) and a lock
//! file; ACME account credentials live in `<base>/accounts/`. The base is `--state-dir`,
//! else `$XDG_STATE_HOME/mastomedia/cert` (see [`crate::journal::state_dir`]).
//!
//! Every file is written 0600 (directories 0700) through a temporary file and a rename,
//! so a crash leaves the old or the new content, never half of it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::CertError;
use super::keys::KeyType;
use super::timing::Window;

/// One certificate + key pair on disk.
#[derive(Clone, PartialEq, Eq)]
pub struct Installed {
    /// The PEM chain, leaf first.
    pub cert_pem: String,
    /// The private key PEM, as uploaded.
    pub key_pem: String,
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Installed { cert_pem, key_pem: [redacted] }")
    }
}

/// Which pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// What the bucket serves (as far as we know).
    Current,
    /// What it served before; re-uploaded if a new certificate cannot be installed.
    Previous,
    /// Issued, validated, not yet installed.
    Pending,
}

impl Slot {
    fn dir(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Previous => "previous",
            Slot::Pending => "pending",
        }
    }
}

/// The ARI state of the installed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AriState {
    /// Serial of the certificate the window is for.
    pub serial: String,
    /// The suggested window.
    pub window: Window,
    /// Our random pick inside it.
    pub chosen: DateTime<Utc>,
    /// Do not ask again before this (the CA's `Retry-After`, at most 12 h).
    pub next_check: DateTime<Utc>,
    /// The CA's explanation URL, if any.
    pub explanation_url: Option<String>,
}

/// `renewal.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The ACME directory the current certificate came from.
    pub directory: Option<String>,
    /// Its key type.
    pub key_type: Option<KeyType>,
    /// When it was installed.
    pub installed_at: Option<DateTime<Utc>>,
    /// ARI state, when the CA offers ARI.
    pub ari: Option<AriState>,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    /// When the last attempt failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub last_failure: Option<String>,
}

/// An open state directory for one domain.
#[derive(Debug, Clone)]
pub struct StateDir {
    base: PathBuf,
    dir: PathBuf,
}

/// Holds the per-domain lock until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// `[A-Za-z0-9._-]` kept, everything else `_`.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn mkdir_private(dir: &Path) -> Result<(), CertError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CertError::file(dir, e))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir).map_err(|e| CertError::file(dir, e))
    }
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    if let Some(dir) = path.parent() {
        mkdir_private(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| CertError::file(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| CertError::file(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CertError::file(path, e))
}

fn read_opt(path: &Path) -> Result<Option<String>, CertError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CertError::file(path, e)),
    }
}

impl StateDir {
    /// The default base: `<state_dir>/cert`.
    pub fn default_base() -> PathBuf {
        crate::journal::state_dir().join("cert")
    }

    /// Opens (creating, 0700) `<base>/<domain>/`.
    pub fn open(base: Option<&Path>, domain: &str) -> Result<Self, CertError> {
        let base = base.map_or_else(Self::default_base, Path::to_path_buf);
        let dir = base.join(safe(domain));
        mkdir_private(&dir)?;
        Ok(Self { base, dir })
    }

    /// Opens without creating anything (for `cert status`); `None` if it does not exist.
    pub fn existing(base: Option<&Path>, domain: &str) -> Option<Self> {
        let base = base.map_or_else(Self::default_base, Path::to_path_buf);
        let dir = base.join(safe(domain));
        dir.is_dir().then_some(Self { base, dir })
    }

    /// The domain's folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the per-domain lock without waiting. Errors: [`CertError::Locked`].
    pub fn lock(&self) -> Result<LockGuard, CertError> {
        let path = self.dir.join("lock");
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path).map_err(|e| CertError::file(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(LockGuard { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(CertError::Locked(path)),
            Err(fs::TryLockError::Error(e)) => Err(CertError::file(&path, e)),
        }
    }

    /// Where the ACME account for `directory` is kept (one account per CA directory).
    pub fn account_path(&self, directory: &str) -> PathBuf {
        let name = directory
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        self.base
            .join("accounts")
            .join(format!("{}.json", safe(name)))
    }

    /// Reads a pair; `None` when the slot is empty.
    pub fn read(&self, slot: Slot) -> Result<Option<Installed>, CertError> {
        let d = self.dir.join(slot.dir());
        match (
            read_opt(&d.join("cert.pem"))?,
            read_opt(&d.join("key.pem"))?,
        ) {
            (Some(cert_pem), Some(key_pem)) => Ok(Some(Installed { cert_pem, key_pem })),
            _ => Ok(None),
        }
    }

    /// Writes a pair (key first, so a chain on disk always has its key).
    pub fn write(&self, slot: Slot, pair: &Installed) -> Result<(), CertError> {
        let d = self.dir.join(slot.dir());
        write_private(&d.join("key.pem"), pair.key_pem.as_bytes())?;
        write_private(&d.join("cert.pem"), pair.cert_pem.as_bytes())
    }

    /// Writes only the key of a slot (a new key, before its certificate exists).
    pub fn write_key(&self, slot: Slot, key_pem: &str) -> Result<(), CertError> {
        let d = self.dir.join(slot.dir());
        let _ = fs::remove_file(d.join("cert.pem"));
        write_private(&d.join("key.pem"), key_pem.as_bytes())
    }

    /// After a successful install: `current` → `previous`, `pending` → `current`.
    pub fn promote_pending(&self) -> Result<(), CertError> {
        let pending = self.dir.join(Slot::Pending.dir());
        let current = self.dir.join(Slot::Current.dir());
        let previous = self.dir.join(Slot::Previous.dir());
        if current.is_dir() {
            if previous.exists() {
                fs::remove_dir_all(&previous).map_err(|e| CertError::file(&previous, e))?;
            }
            fs::rename(&current, &previous).map_err(|e| CertError::file(&current, e))?;
        }
        fs::rename(&pending, &current).map_err(|e| CertError::file(&pending, e))
    }

    /// `renewal.json` (default when absent).
    pub fn meta(&self) -> Result<Meta, CertError> {
        let path = self.dir.join("renewal.json");
        match read_opt(&path)? {
            None => Ok(Meta::default()),
            Some(s) => serde_json::from_str(&s).map_err(|e| {
                CertError::Invalid(format!(
                    "{}: {e}; delete it to start over (the certificate files stay)",
                    path.display()
                ))
            }),
        }
    }

    /// Writes `renewal.json`.
    pub fn write_meta(&self, meta: &Meta) -> Result<(), CertError> {
        let text = serde_json::to_string_pretty(meta).expect("meta serialises");
        write_private(&self.dir.join("renewal.json"), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_slots_rotate() {
        let base = std::env::temp_dir().join(format!("mm-cert-state-{}", std::process::id()));
        let st = StateDir::open(Some(&base), "media.example.social").unwrap();
        let a = Installed {
            cert_pem: "A".into(),
            key_pem: "ka".into(),
        };
        let b = Installed {
            cert_pem: "B".into(),
            key_pem: "kb".into(),
        };
        st.write(Slot::Pending, &a).unwrap();
        st.promote_pending().unwrap();
        st.write(Slot::Pending, &b).unwrap();
        st.promote_pending().unwrap();
        assert_eq!(st.read(Slot::Current).unwrap(), Some(b));
        assert_eq!(st.read(Slot::Previous).unwrap(), Some(a));
        assert_eq!(st.read(Slot::Pending).unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(st.path().join("current/key.pem")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        let _guard = st.lock().unwrap();
        assert!(matches!(st.lock(), Err(CertError::Locked(_))));
        assert!(
            st.account_path("https://acme-v02.api.letsencrypt.org/directory")
                .ends_with("accounts/acme-v02.api.letsencrypt.org_directory.json")
        );
        let _ = fs::remove_dir_all(base);
    }
}
