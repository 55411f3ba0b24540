//! [`LinodeConfig`]: what `cert` and `doctor` read beyond Mastodon's own variables.

use super::{Secret, Vars};

/// The Linode API settings, from the env file or the environment (never from flags).
#[derive(Debug, Clone)]
pub struct LinodeConfig {
    /// `LINODE_TOKEN`: a personal access token with Object Storage read/write scope.
    pub token: Option<Secret<String>>,
    /// `LINODE_API_URL` (default `https://api.linode.com/v4`; tests point it at a double).
    /// Checked by [`crate::cert::linode::check_api_url`] before the token is sent to it.
    pub api_url: String,
    /// `LINODE_REGION`: the bucket's region id (`us-east`); found through the API when unset.
    pub region: Option<String>,
}

impl LinodeConfig {
    /// Reads `LINODE_TOKEN`, `LINODE_API_URL` and `LINODE_REGION` from `vars`.
    pub fn from_vars(vars: &Vars) -> Self {
        Self {
            token: vars.get("LINODE_TOKEN").map(|t| Secret::new(t.to_owned())),
            api_url: vars
                .get("LINODE_API_URL")
                .unwrap_or("https://api.linode.com/v4")
                .trim_end_matches('/')
                .to_owned(),
            region: vars.get("LINODE_REGION").map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_secret() {
        let c = LinodeConfig::from_vars(&Vars::from_pairs([("LINODE_TOKEN", "tok-123")]));
        assert!(!format!("{c:?}").contains("tok-123"));
        assert_eq!(c.api_url, "https://api.linode.com/v4");
    }
}
