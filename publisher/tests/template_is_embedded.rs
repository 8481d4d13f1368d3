//! Every file of fleet-repo-template/ is embedded in the binary, byte for
//! byte, so `init` lays down what the repo holds.

use std::collections::BTreeMap;
use std::path::Path;

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_template_file_is_embedded() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-repo-template");
    let mut on_disk = BTreeMap::new();
    walk(&root, &root, &mut on_disk);
    let embedded: BTreeMap<String, String> = flotilla_publisher::template::FILES
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        embedded.keys().collect::<Vec<_>>(),
        "add new template files to publisher/src/template.rs FILES"
    );
    assert_eq!(on_disk, embedded);
}

#[test]
fn template_example_channel_is_valid() {
    // channels/stable.toml.example is what `rollout set` writes; it must parse.
    let text = flotilla_publisher::template::FILES
        .iter()
        .find(|(p, _)| *p == "channels/stable.toml.example")
        .unwrap()
        .1;
    let ch: flotilla_protocol::Channel =
        flotilla_protocol::sources::parse_strict(Path::new("stable.toml"), text).unwrap();
    assert_eq!(ch.waves, flotilla_protocol::sources::standard_waves());
}
