//! Listing: the filters, the sort and the pages every list shares (sandboxes, snapshots,
//! registries, volumes, service URLs), decided once so each list answers the same query the
//! same way.
//!
//! Pages follow a cursor that names the last item handed out (its sort value and id), not a
//! position: a sandbox deleted or created between two pages makes no other item repeat or go
//! missing (an item whose own sort value changes between pages, a rename under
//! `sort_by=name`, may). The older `limit`/`offset` pages still work.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::store::Principal;

/// The largest cursor page.
pub const MAX_PAGE_SIZE: usize = 100;
/// A cursor page's size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A value an item is sorted by. Items of one list compare like with like; `Null` (a sandbox
/// never stopped, say) sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SortValue {
    /// No value.
    Null,
    /// A number or a time (microseconds since the epoch).
    Int(i64),
    /// Text.
    Text(String),
}

impl SortValue {
    /// A time, to the microsecond.
    pub fn time(t: SystemTime) -> Self {
        let us = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        Self::Int(i64::try_from(us).unwrap_or(i64::MAX))
    }
}

/// What a list needs to know of its items.
pub trait Listed {
    /// A unique id, the tie-breaker of every sort.
    fn list_id(&self) -> &str;
    /// What `name_contains` matches.
    fn list_name(&self) -> &str;
    /// What `status` matches; an item without one matches no status filter.
    fn list_status(&self) -> Option<&str> {
        None
    }
    /// What `label` matches; an item without labels matches no label filter.
    fn list_labels(&self) -> Option<&BTreeMap<String, String>> {
        None
    }
    /// The creating user, for `created_by=me`.
    fn list_creator(&self) -> Option<&str> {
        None
    }
    /// What `tag_value_id` matches; an item without tags matches no tag filter.
    fn list_tag_values(&self) -> Option<&[String]> {
        None
    }
    /// Its value in a sort column (one of the list's [`Listing::columns`]).
    fn sort_value(&self, column: &str) -> SortValue;
}

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One list's rules: what it sorts by, and its pages when the query names no page size.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    /// Columns `sort_by` may name.
    pub columns: &'static [&'static str],
    /// The sort when none is asked for.
    pub default_sort: (&'static str, Order),
    /// Items per page when neither `page_size`, `limit` nor `cursor` is given; `None` answers
    /// everything (what the hand-written SDKs, which send no query, expect of sandboxes).
    pub default_limit: Option<usize>,
    /// The largest `limit` (the older page size), if it has one.
    pub max_limit: Option<usize>,
}

/// A list query, as every list endpoint takes it. A filter on something a list's items do not
/// have (labels on service URLs, say) matches none of them.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Exact status.
    pub status: Option<String>,
    /// `key` (the label is set) or `key=value`; every one must match.
    pub labels: Vec<String>,
    /// Only `me`: the caller's own.
    pub created_by: Option<String>,
    /// Workspace tag value ids; every one must be on the item.
    pub tag_value_ids: Vec<String>,
    /// A sort column.
    pub sort_by: Option<String>,
    /// `asc` or `desc` (`sort_direction`, its older name, lands here too).
    pub sort_order: Option<String>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
    /// Items per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: Option<usize>,
    /// Items per page, the older way.
    pub limit: Option<usize>,
    /// Items to skip, the older way.
    pub offset: Option<usize>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
    /// How many items of the whole list come before this page.
    pub offset: usize,
}

/// What a cursor holds: the sort it belongs to and the last item handed out.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    by: String,
    order: Order,
    value: SortValue,
    id: String,
}

impl ListQuery {
    /// Filters, sorts and pages `items` as `listing` rules, for caller `p`.
    pub fn page<T: Listed>(
        &self,
        items: Vec<T>,
        p: &Principal,
        listing: &Listing,
    ) -> Result<Page<T>, ConfigError> {
        let (by, order) = self.sort(listing)?;
        let size = self.size(listing)?;
        let filter = Filter::new(self, p)?;
        let mut keyed: Vec<(SortValue, T)> = items
            .into_iter()
            .filter(|t| filter.admits(t))
            .map(|t| (t.sort_value(by), t))
            .collect();
        keyed.sort_by(|a, b| compare(order, (&a.0, a.1.list_id()), (&b.0, b.1.list_id())));
        let start = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => {
                let cursor = decode(c, by, order)?;
                let last = (&cursor.value, cursor.id.as_str());
                keyed.partition_point(|(v, t)| {
                    compare(order, (v, t.list_id()), last) != Ordering::Greater
                })
            }
            None => self.offset.unwrap_or(0).min(keyed.len()),
        };
        let end = size.map_or(keyed.len(), |n| start.saturating_add(n).min(keyed.len()));
        let next_cursor = (end < keyed.len() && end > start).then(|| {
            let (value, last) = &keyed[end - 1];
            encode(&Cursor {
                by: by.to_owned(),
                order,
                value: value.clone(),
                id: last.list_id().to_owned(),
            })
        });
        let items = keyed.drain(start..end).map(|(_, t)| t).collect();
        Ok(Page {
            items,
            next_cursor,
            offset: start,
        })
    }

    fn sort<'a>(&'a self, listing: &Listing) -> Result<(&'a str, Order), ConfigError> {
        let order = match self.sort_order.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(o) if o == "asc" => Some(Order::Asc),
            Some(o) if o == "desc" => Some(Order::Desc),
            Some(o) => {
                return Err(ConfigError::Invalid(format!(
                    "sort_order must be 'asc' or 'desc', got {o:?}"
                )));
            }
        };
        let Some(by) = self.sort_by.as_deref() else {
            let (by, default) = listing.default_sort;
            return Ok((by, order.unwrap_or(default)));
        };
        match listing.columns.iter().find(|c| **c == by) {
            Some(c) => Ok((c, order.unwrap_or(Order::Asc))),
            None => Err(ConfigError::Invalid(format!(
                "sort_by must be one of {}, got {by:?}",
                listing.columns.join(", ")
            ))),
        }
    }

    fn size(&self, listing: &Listing) -> Result<Option<usize>, ConfigError> {
        if let Some(n) = self.page_size {
            if !(1..=MAX_PAGE_SIZE).contains(&n) {
                return Err(ConfigError::Invalid(format!(
                    "page_size must be 1 to {MAX_PAGE_SIZE}, got {n}"
                )));
            }
            return Ok(Some(n));
        }
        if let Some(n) = self.limit {
            if let Some(max) = listing.max_limit
                && !(1..=max).contains(&n)
            {
                return Err(ConfigError::Invalid(format!(
                    "limit must be 1 to {max}, got {n}"
                )));
            }
            return Ok(Some(n));
        }
        if self.cursor.as_deref().is_some_and(|c| !c.is_empty()) {
            return Ok(Some(DEFAULT_PAGE_SIZE));
        }
        Ok(listing.default_limit)
    }
}

/// The filters of a query, checked once.
struct Filter<'a> {
    needle: Option<String>,
    status: Option<&'a str>,
    labels: Vec<(&'a str, Option<&'a str>)>,
    creator: Option<&'a str>,
    tags: &'a [String],
}

impl<'a> Filter<'a> {
    fn new(q: &'a ListQuery, p: &'a Principal) -> Result<Self, ConfigError> {
        let creator = match q.created_by.as_deref() {
            None => None,
            Some("me") => Some(p.user_id.as_str()),
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "created_by supports only 'me', got {other:?}"
                )));
            }
        };
        let mut labels = Vec::with_capacity(q.labels.len());
        for l in &q.labels {
            let (k, v) = match l.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (l.as_str(), None),
            };
            if k.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "label must be 'key' or 'key=value', got {l:?}"
                )));
            }
            labels.push((k, v));
        }
        Ok(Self {
            needle: q.name_contains.as_deref().map(str::to_lowercase),
            status: q.status.as_deref(),
            labels,
            creator,
            tags: &q.tag_value_ids,
        })
    }

    fn admits<T: Listed>(&self, t: &T) -> bool {
        let name_ok = self
            .needle
            .as_deref()
            .is_none_or(|n| t.list_name().to_lowercase().contains(n));
        let status_ok = self.status.is_none_or(|s| t.list_status() == Some(s));
        let creator_ok = self.creator.is_none_or(|c| t.list_creator() == Some(c));
        let labels_ok = self.labels.is_empty()
            || t.list_labels().is_some_and(|have| {
                self.labels.iter().all(|(k, v)| match (have.get(*k), v) {
                    (Some(_), None) => true,
                    (Some(got), Some(want)) => got == want,
                    (None, _) => false,
                })
            });
        let tags_ok = self.tags.is_empty()
            || t.list_tag_values()
                .is_some_and(|have| self.tags.iter().all(|t| have.contains(t)));
        name_ok && status_ok && creator_ok && labels_ok && tags_ok
    }
}

fn compare(order: Order, a: (&SortValue, &str), b: (&SortValue, &str)) -> Ordering {
    let asc = a.cmp(&b);
    match order {
        Order::Asc => asc,
        Order::Desc => asc.reverse(),
    }
}

fn encode(c: &Cursor) -> String {
    // Serializing these plain fields cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode(raw: &str, by: &str, order: Order) -> Result<Cursor, ConfigError> {
    let shown: String = raw.chars().take(64).collect();
    let invalid = || ConfigError::Invalid(format!("invalid cursor {shown:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if c.by != by || c.order != order {
        return Err(ConfigError::Invalid(format!(
            "cursor {shown:?} belongs to another sort than sort_by={by}, sort_order={}",
            match order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            }
        )));
    }
    Ok(c)
}
