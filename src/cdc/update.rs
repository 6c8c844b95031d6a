//! Applying an update event's `truncatedArrays` / `updatedFields` / `removedFields` to a
//! document, for when the event carries no `fullDocument` (it was deleted before the lookup, or
//! the producer omits it).

use bson::{Bson, Document};

use super::event::TruncatedArray;

/// Applies MongoDB's update description to `document`: each array of `truncated` is cut to its
/// new length, each dotted path of `updated` is set (descending into sub-documents and array
/// indexes, creating missing sub-documents, padding arrays with nulls as `$set` does), then each
/// path of `removed` is unset (an array element becomes null, as `$unset` does).
pub fn apply_update(
    document: &mut Document,
    truncated: &[TruncatedArray],
    updated: &Document,
    removed: &[String],
) {
    for array in truncated {
        if let Some(Bson::Array(items)) = get_mut(document, &array.field) {
            items.truncate(array.new_size as usize);
        }
    }
    for (path, value) in updated {
        set_path(document, path, value.clone());
    }
    for path in removed {
        unset_path(document, path);
    }
}

fn set_path(document: &mut Document, path: &str, value: Bson) {
    let (head, rest) = split(path);
    match rest {
        None => {
            document.insert(head, value);
        }
        Some(rest) => {
            let child = document
                .entry(head.to_owned())
                .or_insert_with(|| Bson::Document(Document::new()));
            set_in(child, rest, value);
        }
    }
}

fn set_in(target: &mut Bson, path: &str, value: Bson) {
    match target {
        Bson::Document(document) => set_path(document, path, value),
        Bson::Array(items) => {
            let (head, rest) = split(path);
            let Ok(index) = head.parse::<usize>() else {
                return;
            };
            if items.len() <= index {
                items.resize(index + 1, Bson::Null);
            }
            match rest {
                None => items[index] = value,
                Some(rest) => {
                    if !matches!(items[index], Bson::Document(_) | Bson::Array(_)) {
                        items[index] = Bson::Document(Document::new());
                    }
                    set_in(&mut items[index], rest, value);
                }
            }
        }
        // MongoDB refuses to set a field inside a scalar; the event cannot contain such a path.
        _ => {}
    }
}

fn unset_path(document: &mut Document, path: &str) {
    let (head, rest) = split(path);
    match rest {
        None => {
            document.remove(head);
        }
        Some(rest) => {
            if let Some(child) = document.get_mut(head) {
                unset_in(child, rest);
            }
        }
    }
}

fn unset_in(target: &mut Bson, path: &str) {
    match target {
        Bson::Document(document) => unset_path(document, path),
        Bson::Array(items) => {
            let (head, rest) = split(path);
            let Some(item) = head.parse::<usize>().ok().and_then(|i| items.get_mut(i)) else {
                return;
            };
            match rest {
                None => *item = Bson::Null,
                Some(rest) => unset_in(item, rest),
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(document: &'a mut Document, path: &str) -> Option<&'a mut Bson> {
    let (head, rest) = split(path);
    let value = document.get_mut(head)?;
    match rest {
        None => Some(value),
        Some(rest) => get_in(value, rest),
    }
}

fn get_in<'a>(target: &'a mut Bson, path: &str) -> Option<&'a mut Bson> {
    match target {
        Bson::Document(document) => get_mut(document, path),
        Bson::Array(items) => {
            let (head, rest) = split(path);
            let item = items.get_mut(head.parse::<usize>().ok()?)?;
            match rest {
                None => Some(item),
                Some(rest) => get_in(item, rest),
            }
        }
        _ => None,
    }
}

fn split(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn dotted_paths_set_nested_fields_and_array_elements() {
        let mut patient = doc! { "permissions": { "view": {} }, "dataSources": [{ "state": "pending" }], "name": "A" };

        apply_update(
            &mut patient,
            &[],
            &doc! { "permissions.upload": {}, "dataSources.0.state": "connected", "rolesUpdates.2": "x", "name": "B" },
            &["permissions.view".to_owned()],
        );

        assert_eq!(
            patient,
            doc! {
                "permissions": { "upload": {} },
                "dataSources": [{ "state": "connected" }],
                "name": "B",
                "rolesUpdates": { "2": "x" },
            }
        );
    }

    #[test]
    fn setting_past_the_end_of_an_array_pads_with_nulls_and_unset_elements_become_null() {
        let mut document = doc! { "list": [1, 2] };

        apply_update(
            &mut document,
            &[],
            &doc! { "list.3": 4 },
            &["list.0".to_owned(), "missing.path".to_owned()],
        );

        assert_eq!(document, doc! { "list": [Bson::Null, 2, Bson::Null, 4] });
    }

    #[test]
    fn truncated_arrays_are_cut_before_the_set_paths_apply() {
        let mut document = doc! { "sites": { "list": [1, 2, 3, 4] }, "roles": [{ "r": [1, 2] }] };
        let truncated = [
            TruncatedArray {
                field: "sites.list".into(),
                new_size: 2,
            },
            TruncatedArray {
                field: "roles.0.r".into(),
                new_size: 0,
            },
        ];

        apply_update(&mut document, &truncated, &doc! { "sites.list.1": 9 }, &[]);

        assert_eq!(
            document,
            doc! { "sites": { "list": [1, 9] }, "roles": [{ "r": [] }] }
        );
    }
}
