//! Lists: filters, sorts and cursor pages, on plain items.

use std::collections::BTreeMap;

use crate::ConfigError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::store::Principal;

#[derive(Debug, Clone)]
struct Item {
    id: String,
    name: String,
    status: &'static str,
    rank: i64,
    creator: &'static str,
    labels: BTreeMap<String, String>,
    tags: Vec<String>,
}

impl Listed for Item {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        &self.name
    }
    fn list_status(&self) -> Option<&str> {
        Some(self.status)
    }
    fn list_labels(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.labels)
    }
    fn list_creator(&self) -> Option<&str> {
        Some(self.creator)
    }
    fn list_tag_values(&self) -> Option<&[String]> {
        Some(&self.tags)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        match column {
            "name" => SortValue::Text(self.name.clone()),
            // Set on odd items only, as a sandbox's stop time is.
            "odd_rank" if self.name.ends_with(['1', '3', '5', '7', '9']) => {
                SortValue::Int(self.rank)
            }
            "odd_rank" => SortValue::Null,
            _ => SortValue::Int(self.rank),
        }
    }
}

const LISTING: Listing = Listing {
    columns: &["name", "rank", "odd_rank"],
    default_sort: ("rank", Order::Asc),
    default_limit: None,
    max_limit: Some(10),
};

fn me() -> Principal {
    Principal {
        user_id: "me".into(),
        user_name: "me".into(),
        workspace_id: "w".into(),
        is_admin: false,
    }
}

/// Items `n0..n{count}`; ranks repeat in pairs so ties are broken by id.
fn items(count: usize) -> Vec<Item> {
    (0..count)
        .map(|i| Item {
            id: format!("id-{i:02}"),
            name: format!("n{i:02}"),
            status: if i % 2 == 0 { "ready" } else { "stopped" },
            rank: i64::try_from(i / 2).unwrap(),
            creator: if i % 3 == 0 { "me" } else { "other" },
            labels: BTreeMap::from([("i".to_owned(), i.to_string())]),
            tags: if i < 2 { vec!["t".into()] } else { Vec::new() },
        })
        // Handed over in no particular order: the sort is the list's.
        .rev()
        .collect()
}

fn names(page: &Page<Item>) -> Vec<String> {
    page.items.iter().map(|i| i.name.clone()).collect()
}

fn page(all: Vec<Item>, q: &ListQuery) -> Result<Page<Item>, ConfigError> {
    q.page(all, &me(), &LISTING)
}

/// Follows `next_cursor` to the end; `between` may change the items before each next page.
fn walk(mut all: Vec<Item>, q: &ListQuery, mut between: impl FnMut(&mut Vec<Item>)) -> Vec<String> {
    let mut seen = Vec::new();
    let mut q = q.clone();
    loop {
        let p = page(all.clone(), &q).unwrap();
        seen.extend(names(&p));
        let Some(next) = p.next_cursor else {
            return seen;
        };
        between(&mut all);
        q.cursor = Some(next);
    }
}

#[test]
fn no_page_asked_answers_everything_in_the_default_order() {
    let p = page(items(7), &ListQuery::default()).unwrap();
    assert_eq!(p.items.len(), 7);
    assert_eq!(p.next_cursor, None);
    assert_eq!(names(&p)[0], "n00");
}

#[test]
fn cursor_pages_hand_out_every_item_once_in_order() {
    let q = ListQuery {
        page_size: Some(3),
        ..Default::default()
    };
    let all: Vec<String> = (0..10).map(|i| format!("n{i:02}")).collect();
    assert_eq!(walk(items(10), &q, |_| {}), all);
    let desc = ListQuery {
        sort_by: Some("name".into()),
        sort_order: Some("DESC".into()),
        ..q.clone()
    };
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(walk(items(10), &desc, |_| {}), reversed);
    // A cursor alone pages by the default size.
    let first = page(items(30), &q).unwrap();
    let rest = ListQuery {
        cursor: first.next_cursor,
        ..Default::default()
    };
    assert_eq!(
        page(items(30), &rest).unwrap().items.len(),
        crate::listing::DEFAULT_PAGE_SIZE
    );
}

#[test]
fn items_deleted_or_added_between_pages_neither_repeat_nor_skip_others() {
    let q = ListQuery {
        page_size: Some(2),
        sort_by: Some("name".into()),
        ..Default::default()
    };
    // After each page, the first item left (one already handed out) goes: pages by position
    // would skip an item.
    let seen = walk(items(8), &q, |all| {
        let first = (0..all.len()).min_by_key(|&i| all[i].name.clone()).unwrap();
        all.remove(first);
    });
    let all: Vec<String> = (0..8).map(|i| format!("n{i:02}")).collect();
    assert_eq!(seen, all);
    // After each page, an item that sorts before everything comes: pages by position would
    // hand an item out twice.
    let mut added = 0;
    let seen = walk(items(8), &q, |all| {
        let mut early = items(1).remove(0);
        early.id = format!("early-{added}");
        early.name = format!("a{added}");
        all.push(early);
        added += 1;
    });
    assert_eq!(seen, all);
}

#[test]
fn filters_by_name_status_label_and_creator() {
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery::default();
        f(&mut q);
        names(&page(items(6), &q).unwrap())
    };
    assert_eq!(q(|q| q.name_contains = Some("N0".into())).len(), 6);
    assert_eq!(
        q(|q| q.status = Some("stopped".into())),
        ["n01", "n03", "n05"]
    );
    assert_eq!(q(|q| q.labels = vec!["i=4".into()]), ["n04"]);
    assert_eq!(q(|q| q.labels = vec!["i".into()]).len(), 6);
    assert!(q(|q| q.labels = vec!["missing".into()]).is_empty());
    assert!(q(|q| q.labels = vec!["i".into(), "i=9".into()]).is_empty());
    assert_eq!(q(|q| q.created_by = Some("me".into())), ["n00", "n03"]);
    assert_eq!(q(|q| q.tag_value_ids = vec!["t".into()]), ["n00", "n01"]);
    assert!(q(|q| q.tag_value_ids = vec!["t".into(), "u".into()]).is_empty());
}

#[test]
fn descending_pages_break_ties_by_id_and_unset_values_sort_first() {
    // Ranks tie in pairs (0,0,1,1,...): pages of three cut through the ties.
    let q = ListQuery {
        sort_by: Some("rank".into()),
        sort_order: Some("desc".into()),
        page_size: Some(3),
        ..Default::default()
    };
    let seen = walk(items(8), &q, |_| {});
    let want: Vec<String> = (0..8).rev().map(|i| format!("n{i:02}")).collect();
    assert_eq!(seen, want);
    // Items without a value come first ascending, last descending.
    let asc = ListQuery {
        sort_by: Some("odd_rank".into()),
        ..Default::default()
    };
    let firsts = names(&page(items(4), &asc).unwrap());
    assert_eq!(firsts, ["n00", "n02", "n01", "n03"]);
}

#[test]
fn the_next_page_starts_right_after_a_cursor_whose_item_is_gone() {
    let q = ListQuery {
        page_size: Some(3),
        ..Default::default()
    };
    let first = page(items(8), &q).unwrap();
    assert_eq!(names(&first), ["n00", "n01", "n02"]);
    let mut all = items(8);
    all.retain(|i| i.name != "n02");
    let rest = ListQuery {
        cursor: first.next_cursor,
        ..q
    };
    assert_eq!(names(&page(all, &rest).unwrap()), ["n03", "n04", "n05"]);
}

#[test]
fn bad_queries_are_refused_with_the_parameter_named() {
    let cursor = page(
        items(5),
        &ListQuery {
            page_size: Some(1),
            ..Default::default()
        },
    )
    .unwrap()
    .next_cursor
    .unwrap();
    for (q, named) in [
        (
            ListQuery {
                sort_by: Some("secret".into()),
                ..Default::default()
            },
            "sort_by",
        ),
        (
            ListQuery {
                sort_order: Some("up".into()),
                ..Default::default()
            },
            "sort_order",
        ),
        (
            ListQuery {
                page_size: Some(0),
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListQuery {
                page_size: Some(101),
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListQuery {
                limit: Some(11),
                ..Default::default()
            },
            "limit",
        ),
        (
            ListQuery {
                created_by: Some("someone".into()),
                ..Default::default()
            },
            "created_by",
        ),
        (
            ListQuery {
                labels: vec!["=v".into()],
                ..Default::default()
            },
            "label",
        ),
        (
            ListQuery {
                cursor: Some("not a cursor".into()),
                ..Default::default()
            },
            "cursor",
        ),
        // A cursor of one sort is refused by another.
        (
            ListQuery {
                cursor: Some(cursor),
                sort_by: Some("name".into()),
                ..Default::default()
            },
            "cursor",
        ),
    ] {
        match page(items(5), &q) {
            Err(ConfigError::Invalid(m)) => assert!(m.contains(named), "{named}: {m}"),
            other => panic!("{named}: {other:?}"),
        }
    }
}

#[test]
fn offset_pages_still_work_and_say_where_they_start() {
    let q = ListQuery {
        limit: Some(2),
        offset: Some(3),
        ..Default::default()
    };
    let p = page(items(6), &q).unwrap();
    assert_eq!(names(&p), ["n03", "n04"]);
    assert_eq!(p.offset, 3);
    assert!(p.next_cursor.is_some());
    let past = ListQuery {
        offset: Some(99),
        ..Default::default()
    };
    assert!(page(items(6), &past).unwrap().items.is_empty());
}
