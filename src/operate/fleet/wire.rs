//! The operator's book on the wire between replicas (`OperatorState` of the admin API) and back, with
//! every entry from a peer checked as untrusted input.

use crate::domain::operator_state::{Book, Entry, MAX_ENTRIES, Operator, Version, check_entry};
use crate::operate::api::{OperatorEntry, OperatorState};

/// A book as the admin API sends it.
pub fn to_wire(book: &Book) -> Vec<OperatorEntry> {
    book.iter()
        .map(|(cluster, entry)| OperatorEntry {
            cluster: cluster.to_string(),
            state: entry.operator.as_str().to_owned(),
            reason: entry.reason.clone(),
            wall_ms: entry.version.wall_ms,
            counter: entry.version.counter,
            origin: entry.version.origin.to_string(),
            config_enabled: entry.config_enabled,
        })
        .collect()
}

/// A peer's entries that passed the checks, and what was left out (one problem each).
pub type Checked = (Vec<(String, Entry)>, Vec<String>);

/// A peer's entries, checked: an entry that names an unknown state or breaks a limit is left out
/// (and named in the second value); more than [`MAX_ENTRIES`] is refused whole.
pub fn from_wire(state: &OperatorState) -> Result<Checked, String> {
    if state.entries.len() > MAX_ENTRIES {
        return Err(format!("{} entries (at most {MAX_ENTRIES})", state.entries.len()));
    }
    let mut entries = Vec::with_capacity(state.entries.len());
    let mut refused = Vec::new();
    for wire in &state.entries {
        let Some(operator) = Operator::parse(&wire.state) else {
            refused.push(format!("cluster `{}`: unknown state `{}`", wire.cluster, wire.state));
            continue;
        };
        let entry = Entry {
            operator,
            reason: wire.reason.clone(),
            version: Version {
                wall_ms: wire.wall_ms,
                counter: wire.counter,
                origin: wire.origin.as_str().into(),
            },
            config_enabled: wire.config_enabled,
        };
        match check_entry(&wire.cluster, entry) {
            Ok(entry) => entries.push((wire.cluster.clone(), entry)),
            Err(problem) => refused.push(problem),
        }
    }
    Ok((entries, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut book = Book::default();
        let version = Version { wall_ms: 1_700_000_000_000, counter: 3, origin: "r0".into() };
        book.offer(
            "blue",
            Entry { operator: Operator::Draining, reason: "upgrade".into(), version, config_enabled: true },
        );
        let mut state =
            OperatorState { replica: "r0".into(), instance: 7, settled: true, entries: to_wire(&book) };
        let (entries, refused) = from_wire(&state).unwrap();
        assert!(refused.is_empty());
        let mut back = Book::default();
        back.merge(entries.iter().map(|(c, e)| (c.as_str(), e.clone())));
        assert_eq!(back, book);

        state.entries.push(OperatorEntry {
            cluster: "green".into(),
            state: "drained".into(),
            origin: "r1".into(),
            ..Default::default()
        });
        state.entries.push(OperatorEntry {
            cluster: String::new(),
            state: "active".into(),
            origin: "r1".into(),
            ..Default::default()
        });
        let (entries, refused) = from_wire(&state).unwrap();
        assert_eq!((entries.len(), refused.len()), (1, 2), "{refused:?}");
        assert!(refused[0].contains("unknown state `drained`"), "{refused:?}");

        state.entries = vec![OperatorEntry::default(); MAX_ENTRIES + 1];
        assert!(from_wire(&state).is_err());
    }
}
