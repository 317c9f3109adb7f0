//! The query every list endpoint takes, read into [`ListQuery`]: the scalar parameters through
//! [`ApiQuery`] (so a bad number is a 422 that names it), the repeated ones (`label`,
//! `tag_value_id`) from the raw query string, as the generated client sends them
//! (`label=a&label=b`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Deserialize;
use warren_control::{ConfigError, ListQuery};

use crate::error::{ApiError, ApiQuery};

#[derive(Debug, Deserialize)]
struct Scalars {
    name_contains: Option<String>,
    status: Option<String>,
    created_by: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    sort_direction: Option<String>,
    cursor: Option<String>,
    page_size: Option<usize>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// A list endpoint's query.
#[derive(Debug)]
pub(crate) struct ListParams(pub ListQuery);

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(s) = ApiQuery::<Scalars>::from_request_parts(parts, state).await?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
                .map_err(|e| ConfigError::Malformed(format!("invalid query string: {e}")))?;
        let repeated = |key: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .collect()
        };
        Ok(Self(ListQuery {
            name_contains: s.name_contains,
            status: s.status,
            labels: repeated("label"),
            created_by: s.created_by,
            tag_value_ids: repeated("tag_value_id"),
            sort_by: s.sort_by,
            // `sort_direction` is the older name; `sort_order` wins when both come.
            sort_order: s.sort_order.or(s.sort_direction),
            // An empty cursor is the first page, as none is.
            cursor: s.cursor.filter(|c| !c.is_empty()),
            page_size: s.page_size,
            limit: s.limit,
            offset: s.offset,
        }))
    }
}
