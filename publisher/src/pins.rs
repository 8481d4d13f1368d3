//! `pin add|remove|list`: comment-preserving edits of `pins.toml`.
//!
//! A pin holds agents (by id, or by labels they all carry) on a release, or
//! moves them to another channel; the first matching pin wins. Edits are
//! validated with the whole repo and undone if anything fails.

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_protocol::sources::{parse_strict, PinsFile};
use flotilla_protocol::Pin;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

use crate::{Error, Repo, Result};

const PINS: &str = "pins.toml";

/// Which pins `pin remove` removes.
#[derive(Clone, Debug)]
pub enum PinSelector {
    /// The pin at this index (as `pin list` shows it).
    Index(usize),
    /// This agent id, from every pin; pins left without agents or labels go.
    Agent(String),
}

fn read(repo: &Repo) -> Result<DocumentMut> {
    match std::fs::read_to_string(repo.path(PINS)) {
        Ok(text) => text
            .parse::<DocumentMut>()
            .map_err(|e| Error::file(PINS, e.to_string().trim_end())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
        Err(e) => Err(Error::io(PINS, e)),
    }
}

fn pins_mut(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables> {
    if doc.get("pin").is_none() {
        doc["pin"] = Item::ArrayOfTables(ArrayOfTables::new());
    }
    doc["pin"]
        .as_array_of_tables_mut()
        .ok_or_else(|| Error::file(PINS, "pin: expected [[pin]] tables"))
}

/// The pins, in order.
pub fn list(repo: &Repo) -> Result<Vec<Pin>> {
    match std::fs::read_to_string(repo.path(PINS)) {
        Ok(text) => Ok(parse_strict::<PinsFile>(Path::new(PINS), &text)?.pins),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(PINS, e)),
    }
}

/// Appends a pin; returns its index.
pub fn add(repo: &Repo, pin: &Pin) -> Result<usize> {
    let mut doc = read(repo)?;
    let pins = pins_mut(&mut doc)?;
    let pins_empty = pins.is_empty();
    let mut t = Table::new();
    if !pin.agents.is_empty() {
        t["agents"] = value(Array::from_iter(pin.agents.iter().map(String::as_str)));
    }
    if !pin.labels.is_empty() {
        let mut labels = InlineTable::new();
        for (k, v) in &pin.labels {
            labels.insert(k, v.as_str().into());
        }
        t["labels"] = value(labels);
    }
    if let Some(r) = &pin.release {
        t["release"] = value(r.to_string());
    }
    if let Some(c) = &pin.channel {
        t["channel"] = value(c.clone());
    }
    if let Some(n) = &pin.note {
        t["note"] = value(n.clone());
    }
    if pins_empty {
        // A pins.toml of comments only keeps them as trailing text; move
        // them above the first pin so they stay at the top of the file.
        let header = doc.trailing().as_str().unwrap_or("").to_owned();
        if !header.trim().is_empty() {
            doc.set_trailing("");
            t.decor_mut()
                .set_prefix(format!("{}\n\n", header.trim_end()));
        }
    }
    let pins = pins_mut(&mut doc)?;
    pins.push(t);
    let index = pins.len() - 1;
    repo.replace_source_validated(Path::new(PINS), &doc.to_string(), |_| Ok(()))?;
    Ok(index)
}

/// Removes pins; returns how many pins changed or went.
pub fn remove(repo: &Repo, which: &PinSelector) -> Result<usize> {
    let mut doc = read(repo)?;
    let pins = pins_mut(&mut doc)?;
    let changed = match which {
        PinSelector::Index(i) => {
            if *i >= pins.len() {
                return Err(Error::Usage(format!(
                    "pins.toml has {} pin(s); there is no pin {i} (see `flotilla-publisher pin list`)",
                    pins.len()
                )));
            }
            pins.remove(*i);
            1
        }
        PinSelector::Agent(agent) => {
            let mut changed = 0;
            let mut i = 0;
            while i < pins.len() {
                let t = pins.get_mut(i).expect("index in range");
                let mut hit = false;
                if let Some(arr) = t.get_mut("agents").and_then(|a| a.as_array_mut()) {
                    let before = arr.len();
                    arr.retain(|v| v.as_str() != Some(agent.as_str()));
                    hit = arr.len() != before;
                }
                if hit {
                    changed += 1;
                    let no_agents = t
                        .get("agents")
                        .and_then(|a| a.as_array())
                        .is_none_or(|a| a.is_empty());
                    let no_labels = t
                        .get("labels")
                        .and_then(|l| l.as_table_like())
                        .is_none_or(|l| l.is_empty());
                    if no_agents && no_labels {
                        pins.remove(i);
                        continue;
                    }
                    if no_agents {
                        t.remove("agents");
                    }
                }
                i += 1;
            }
            if changed == 0 {
                return Err(Error::Usage(format!(
                    "no pin in pins.toml names agent {agent:?}"
                )));
            }
            changed
        }
    };
    repo.replace_source_validated(Path::new(PINS), &doc.to_string(), |_| Ok(()))?;
    Ok(changed)
}

/// One line describing a pin, for `pin list`.
pub fn describe(pin: &Pin) -> String {
    let mut who = Vec::new();
    if !pin.agents.is_empty() {
        who.push(format!("agents {}", pin.agents.join(",")));
    }
    if !pin.labels.is_empty() {
        let l: Vec<String> = pin.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        who.push(format!("labels {}", l.join(",")));
    }
    let what = match (&pin.release, &pin.channel) {
        (Some(r), _) => format!("held on release {r}"),
        (_, Some(c)) => format!("follow channel {c}"),
        _ => "no target".into(),
    };
    let note = pin
        .note
        .as_ref()
        .map(|n| format!("  # {n}"))
        .unwrap_or_default();
    format!("{}: {what}{note}", who.join(" or "))
}

/// Parses `key=value` label arguments.
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| Error::Usage(format!("--label {a:?}: expected key=value")))
        })
        .collect()
}
