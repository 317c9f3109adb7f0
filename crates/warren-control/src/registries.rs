//! Container registry credentials (LANGSMITH-API.md §2.5): admins store them, every member's
//! snapshot builds may pull with them (`registry_id`), and the password is never shown. A
//! registry's credentials are sent only to its own host: a build whose image names another
//! registry is refused, so a member cannot point the workspace's credentials at a host they
//! control.

use crate::auth::admin_only;
use crate::config::ConfigError;
use crate::control::{Control, now};
use crate::error::ControlError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::store::{Principal, RegistryRecord, StoreError, rfc3339};

/// Longest registry password or token accepted.
pub const MAX_REGISTRY_PASSWORD_BYTES: usize = 16 << 10;

/// A create or update of a registry: absent fields keep their value on update.
#[derive(Debug, Clone, Default)]
pub struct PutRegistry {
    /// Name, unique in the workspace.
    pub name: Option<String>,
    /// Registry URL or host: `https://ghcr.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub url: Option<String>,
    /// `DOCKER_CONFIG` (default) or `AWS_ROLE`.
    pub auth_type: Option<String>,
    /// For `AWS_ROLE`.
    pub aws_role_arn: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password or token.
    pub password: Option<String>,
}

/// The host (and port) a registry URL names, lowercase, the way image references name it.
/// Docker Hub's many spellings become `docker.io`.
pub fn registry_host(url: &str) -> Result<String, ControlError> {
    let bad = || ConfigError::Invalid(format!("invalid registry url {url:?}"));
    let rest = url
        .trim()
        .strip_prefix("https://")
        .or_else(|| url.trim().strip_prefix("http://"))
        .unwrap_or(url.trim());
    let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !ok {
        return Err(bad().into());
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    })
}

/// The registry host of an image reference; references without one are Docker Hub's.
pub fn reference_host(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            registry_host(first).unwrap_or_else(|_| first.to_ascii_lowercase())
        }
        _ => "docker.io".into(),
    }
}

fn provider(host: &str) -> &'static str {
    if host == "ghcr.io" {
        "GHCR"
    } else if host == "docker.io" {
        "DOCKER_HUB"
    } else if host.ends_with(".amazonaws.com") {
        "ECR"
    } else if host.ends_with("-docker.pkg.dev") || host.ends_with("gcr.io") {
        "GAR"
    } else {
        "DOCKER_REGISTRY"
    }
}

impl Control {
    /// Creates a registry.
    pub fn create_registry(
        &self,
        p: &Principal,
        req: PutRegistry,
    ) -> Result<RegistryRecord, ControlError> {
        admin_only(p, "change registries")?;
        let (Some(name), Some(url)) = (req.name.clone(), req.url.clone()) else {
            return Err(ConfigError::Invalid("name and url are required".into()).into());
        };
        let t = rfc3339(now());
        let mut rec = RegistryRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            name,
            host: String::new(),
            url,
            auth_type: "DOCKER_CONFIG".into(),
            aws_role_arn: None,
            username: None,
            password: None,
            provider: String::new(),
            created_at: t.clone(),
            created_by: p.user_id.clone(),
            updated_at: t,
            updated_by: p.user_id.clone(),
        };
        apply(&mut rec, req)?;
        self.store
            .put_registry(&rec)
            .map_err(|e| conflict(e, &rec.name))?;
        self.audit(
            Some(p),
            "registry.create",
            Some(&rec.id),
            Some(rec.name.clone()),
        );
        Ok(rec)
    }

    /// Changes a registry; absent fields are kept.
    pub fn update_registry(
        &self,
        p: &Principal,
        id_or_name: &str,
        req: PutRegistry,
    ) -> Result<RegistryRecord, ControlError> {
        admin_only(p, "change registries")?;
        let mut rec = self.registry(p, id_or_name)?;
        apply(&mut rec, req)?;
        rec.updated_at = rfc3339(now());
        rec.updated_by = p.user_id.clone();
        self.store
            .put_registry(&rec)
            .map_err(|e| conflict(e, &rec.name))?;
        self.audit(
            Some(p),
            "registry.update",
            Some(&rec.id),
            Some(rec.name.clone()),
        );
        Ok(rec)
    }

    /// A registry of the caller's workspace by id or name.
    pub fn registry(
        &self,
        p: &Principal,
        id_or_name: &str,
    ) -> Result<RegistryRecord, ControlError> {
        self.store
            .find_registry(&p.workspace_id, id_or_name)?
            .ok_or_else(|| ControlError::NotFound(format!("Registry '{id_or_name}' not found")))
    }

    /// The caller's workspace's registries.
    pub fn list_registries(&self, p: &Principal) -> Result<Vec<RegistryRecord>, ControlError> {
        Ok(self.store.list_registries(&p.workspace_id)?)
    }

    /// The caller's workspace's registries, filtered, sorted and paged (by name unless the
    /// query sorts otherwise).
    pub fn registries_page(
        &self,
        p: &Principal,
        q: &ListQuery,
    ) -> Result<Page<RegistryRecord>, ControlError> {
        Ok(q.page(self.list_registries(p)?, p, &REGISTRY_LISTING)?)
    }

    /// Deletes a registry.
    pub fn delete_registry(&self, p: &Principal, id_or_name: &str) -> Result<(), ControlError> {
        admin_only(p, "change registries")?;
        let rec = self.registry(p, id_or_name)?;
        self.store.delete_registry(&p.workspace_id, &rec.id)?;
        self.audit(Some(p), "registry.delete", Some(&rec.id), Some(rec.name));
        Ok(())
    }

    /// The credentials a build of `reference` pulls with from registry `id_or_name`, refused
    /// when the reference names another host.
    pub(crate) fn registry_credentials(
        &self,
        p: &Principal,
        id_or_name: &str,
        reference: &str,
    ) -> Result<(String, Option<(String, String)>), ControlError> {
        let rec = self.registry(p, id_or_name)?;
        let host = reference_host(reference);
        if host != rec.host {
            return Err(ConfigError::Invalid(format!(
                "image {reference:?} is on {host}, but registry '{}' holds credentials for {}",
                rec.name, rec.host
            ))
            .into());
        }
        if rec.auth_type != "DOCKER_CONFIG" {
            return Err(ConfigError::Unsupported(
                "AWS_ROLE registries are not supported; use DOCKER_CONFIG with a token".into(),
            )
            .into());
        }
        let creds = match (rec.username, rec.password) {
            (Some(u), Some(pw)) => Some((u, pw)),
            _ => None,
        };
        Ok((rec.id, creds))
    }
}

fn conflict(e: StoreError, name: &str) -> ControlError {
    match e {
        StoreError::Conflict(_) => {
            ControlError::Conflict(format!("Registry with name '{name}' already exists"))
        }
        other => other.into(),
    }
}

fn apply(rec: &mut RegistryRecord, req: PutRegistry) -> Result<(), ControlError> {
    if let Some(name) = req.name {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(ConfigError::Invalid(format!(
                "invalid registry name {name:?}: use 1-128 letters, digits, '-', '_' or '.'"
            ))
            .into());
        }
        rec.name = name;
    }
    if let Some(url) = req.url {
        rec.host = registry_host(&url)?;
        rec.provider = provider(&rec.host).into();
        rec.url = url;
    }
    if let Some(t) = req.auth_type {
        if t != "DOCKER_CONFIG" && t != "AWS_ROLE" {
            return Err(ConfigError::Invalid(format!(
                "auth_type must be DOCKER_CONFIG or AWS_ROLE, got {t:?}"
            ))
            .into());
        }
        rec.auth_type = t;
    }
    if let Some(a) = req.aws_role_arn {
        rec.aws_role_arn = Some(a);
    }
    if let Some(u) = req.username {
        rec.username = Some(u);
    }
    if let Some(pw) = req.password {
        if pw.len() > MAX_REGISTRY_PASSWORD_BYTES {
            return Err(ConfigError::Invalid("the password is too long".into()).into());
        }
        rec.password = Some(pw);
    }
    Ok(())
}

/// How registries list: 50 a page without a page size; `limit` at most 500.
const REGISTRY_LISTING: Listing = Listing {
    columns: &["name", "created_at"],
    default_sort: ("name", Order::Asc),
    default_limit: Some(50),
    max_limit: Some(500),
};

impl Listed for RegistryRecord {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        &self.name
    }
    fn list_creator(&self) -> Option<&str> {
        Some(&self.created_by)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        match column {
            // RFC 3339 in one format sorts as text.
            "created_at" => SortValue::Text(self.created_at.clone()),
            _ => SortValue::Text(self.name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{reference_host, registry_host};

    #[test]
    fn hosts_come_out_the_way_references_name_them() {
        assert_eq!(registry_host("https://GHCR.io/").unwrap(), "ghcr.io");
        assert_eq!(
            registry_host("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        assert_eq!(registry_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert!(registry_host("https://").is_err());
        assert!(registry_host("a b").is_err());
        assert_eq!(reference_host("python:3.12"), "docker.io");
        assert_eq!(reference_host("library/python:3.12"), "docker.io");
        assert_eq!(reference_host("ghcr.io/org/app:1"), "ghcr.io");
        assert_eq!(
            reference_host("127.0.0.1:5000/team/app:1"),
            "127.0.0.1:5000"
        );
        assert_eq!(reference_host("localhost/x"), "localhost");
    }
}
